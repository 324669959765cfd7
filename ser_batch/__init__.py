"""ser-batch: speech emotion recognition as a distributed batch job."""

__version__ = "0.1.0"
