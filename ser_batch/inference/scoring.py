"""Scoring audio with a model bundle: the one code path of ``predict``, ``evaluate`` and ``score``.

A stream (a file, or one channel of it) is decoded in blocks, cut into the bundle's sliding
windows (:mod:`ser_batch.features.windows`), and every window is scored by the bundle's models in one
batched call per block. A stream's summary is the mean of the probabilities of its windows
with speech (``speech_ratio >= score.min_speech_ratio``). ``predict`` prints that summary
for single files, ``score`` writes the windows and summaries of whole archives, and
``evaluate`` applies the same rule to the windows stored by ``extract``.

Which of the bundle's model sets scores a stream is decided here, once for all three
(:func:`stream_inputs`): the narrow-band set for inputs at 8 kHz or below when the bundle has
one, and with ``score.normalize = "file"`` the normalised set on the stream's windows z-scored
by the statistics of its own speech windows (:mod:`ser_batch.models.normalize`), unless the stream
has less than ``score.min_normalize_s`` of speech.

Models are loaded once per process (:func:`cached_bundle`): a Ray worker keeps them across
the shards it runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ser_batch.audio.decode import AudioInfo, iter_audio_blocks, probe_audio
from ser_batch.config import ENSEMBLE, SCORE_FRAMEWORKS, Config, ScoreConfig
from ser_batch.errors import BundleError, FeatureError, SerBatchError
from ser_batch.features.checks import check_length, one_frame
from ser_batch.features.melframes import StreamFrames
from ser_batch.features.recipes import RECIPES
from ser_batch.features.windows import WindowBatch, first_sample_needed, stream_windows
from ser_batch.models.bundle import MANIFEST, Bundle, load_bundle
from ser_batch.models.classes import parse_classes, restrict
from ser_batch.models.model_sets import GLOBAL
from ser_batch.models.normalize import GroupStats, StatsSums, fit_stats

#: Bundles loaded in this process, by (path, id).
_BUNDLES: dict[tuple[str, str], Bundle] = {}


def bundle_id(bundle: Bundle) -> str:
    """A short id of a bundle: the sha256 of its manifest (which holds every file's sha256)."""
    return hashlib.sha256((Path(bundle.path) / MANIFEST).read_bytes()).hexdigest()[:16]


def cached_bundle(path: str | Path, expected_id: str | None = None) -> Bundle:
    """The bundle at ``path`` with its models loaded, once per process.

    Raises
    ------
    BundleError
        If the bundle changed since the run checked it (``expected_id``).
    """
    key = (str(path), expected_id or "")
    if key not in _BUNDLES:
        bundle = load_bundle(Path(path))
        if expected_id is not None and bundle_id(bundle) != expected_id:
            raise BundleError(f"bundle {path} changed while the run was using it")
        for name in bundle.frameworks:
            bundle.model(name)
        _BUNDLES[key] = bundle
    return _BUNDLES[key]


def check_scoring_bundle(bundle: Bundle, framework: str) -> None:
    """Refuse bundles that cannot score windows of audio, with a message that says why."""
    from ser_batch import schema

    if framework not in SCORE_FRAMEWORKS:
        raise BundleError(f"unknown framework {framework!r}; use {', '.join(SCORE_FRAMEWORKS)}")
    if framework != ENSEMBLE and framework not in bundle.frameworks:
        raise BundleError(f"bundle {bundle.path} has no {framework} model (it has: {', '.join(bundle.frameworks)})")
    features = bundle.manifest["features"]
    if features.get("schema_version") != schema.SCHEMA_VERSION:
        raise BundleError(
            f"bundle {bundle.path} was trained on feature schema {features.get('schema_version')}; this ser-batch "
            f"computes schema {schema.SCHEMA_VERSION} (local window features): re-extract and retrain it")
    recipe = RECIPES.get(str(features.get("recipe")))
    if recipe is None or not recipe.windows or bundle.aggregation != "segments":
        raise BundleError(f"bundle {bundle.path} scores whole clips ({features.get('recipe')} recipe); scoring "
                          "audio needs a bundle trained on the rich recipe's windows")


def check_normalize(bundle: Bundle, score: ScoreConfig) -> None:
    """Refuse ``score.normalize = "file"`` or ``"archive"`` with a bundle that has no normalised models
    (before any audio is decoded)."""
    if score.normalize != "none":
        bundle.require_normalized()


def class_subset(bundle: Bundle, score: ScoreConfig) -> tuple[str, ...] | None:
    """The classes ``score.classes`` keeps, in the bundle's order; ``None`` for all of them (also
    when it names every class, so that such a run keys its output as one without a subset).

    Raises
    ------
    ConfigError
        If a name is not one of the bundle's classes, or fewer than two are named.
    """
    keep = parse_classes(score.classes or None, bundle.classes)
    return None if keep is None or list(keep) == bundle.classes else keep


def output_classes(bundle: Bundle, score: ScoreConfig) -> list[str]:
    """The classes the probabilities of a run are over: the subset, or all the bundle's."""
    keep = class_subset(bundle, score)
    return list(keep) if keep is not None else bundle.classes


def window_proba(bundle: Bundle, vectors: np.ndarray, *, framework: str, model_set: str = GLOBAL,
                 keep: Sequence[str] | None = None, frames: Sequence[StreamFrames] | None = None,
                 normalize: Callable[[np.ndarray], np.ndarray] | None = None,
                 embeddings: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities of window vectors ``[shape=(k, n_features)]``: ``(k, n_classes)``,
    in ``bundle.classes`` order, by the models of ``model_set``; ``both`` averages the models
    (soft voting). With ``keep`` (:func:`class_subset`), ``(k, len(keep))`` renormalised over them.
    ``frames``: the stretches of log-mel frames the same windows are in, for ``cnn``; ``normalize``:
    how a normalised cnn z-scores its pooled statistics; ``embeddings``: the windows' speaker
    embeddings, for ``ge2e``."""
    if len(vectors) == 0:
        return np.zeros((0, len(keep or bundle.classes)))
    return restrict(bundle.predict_proba(vectors, framework=framework, model_set=model_set, frames=frames,
                                         normalize=normalize, embeddings=embeddings), bundle.classes, keep)


def batch_embeddings(batches: Sequence[WindowBatch]) -> np.ndarray | None:
    """The speaker embeddings of the windows of ``batches``, stacked; None without embeddings."""
    if not batches or any(b.embeddings is None for b in batches):
        return None
    return np.concatenate([b.embeddings for b in batches])


def batch_frames(batches: Sequence[WindowBatch]) -> list[StreamFrames] | None:
    """The stretches of log-mel frames of the windows of ``batches``; None without frames."""
    if not batches or any(b.frames is None for b in batches):
        return None
    return [b.frames for b in batches]


@dataclass
class StreamSummary:
    """Running totals of one stream (or of the part of it one task scored)."""

    n_windows: int = 0
    n_speech: int = 0
    speech_frames: int = 0
    proba_sum: np.ndarray | None = None
    #: The bundle's model set that scored the stream, and whether its windows were z-scored.
    model_set: str | None = None
    normalized: bool = False

    def merge(self, other: "StreamSummary") -> "StreamSummary":
        both = [s for s in (self.proba_sum, other.proba_sum) if s is not None]
        # Ranges of one file are never normalised (a normalised stream is scored whole) and
        # share its band, so they share a model set.
        return StreamSummary(self.n_windows + other.n_windows, self.n_speech + other.n_speech,
                             self.speech_frames + other.speech_frames, sum(both) if both else None,
                             self.model_set or other.model_set, self.normalized or other.normalized)

    def mean_proba(self) -> np.ndarray | None:
        """Mean probabilities over the windows with speech; ``None`` without any."""
        if not self.n_speech or self.proba_sum is None:
            return None
        return self.proba_sum / self.n_speech


@dataclass
class StreamResult:
    """The windows of one stream (a file, or one channel of it) and, once scored, their
    probabilities and the stream's summary.

    Attributes
    ----------
    windows : list of WindowBatch, in time order
    speech : np.ndarray [shape=(k,)], bool, windows with ``speech_ratio >= score.min_speech_ratio``
    proba : np.ndarray [shape=(k, n_classes)], set by :func:`attach_probabilities`
    """

    info: AudioInfo
    channel: int | None
    windows: list[WindowBatch] = field(default_factory=list)
    speech: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    proba: np.ndarray | None = None
    summary: StreamSummary = field(default_factory=StreamSummary)

    def column(self, name: str) -> np.ndarray:
        """One field of every window, concatenated (``start_s``, ``end_s``, ``speech_ratio``, ...)."""
        parts = [getattr(w, name) for w in self.windows]
        return np.concatenate(parts) if parts else np.zeros(0)


def stream_file_windows(path: Path, *, bundle: Bundle, config: Config, channel: int | None = None,
                        windows: tuple[int, int | None] = (0, None)) -> Iterator[WindowBatch]:
    """The windows ``windows`` of one stream of ``path`` (a channel, or all mixed down), decoded
    block by block with the bundle's audio and feature settings.

    Raises
    ------
    AudioError, FeatureError
        If the file cannot be decoded or gives non-finite features.
    """
    settings = bundle.config
    rate = settings.audio.sample_rate
    # The cnn's log-mel frames only when a model that reads them may score (not for --framework keras).
    reach = bundle.frame_reach if bundle.needs_frames and config.score.framework in ("cnn", ENSEMBLE) else None
    # Window vectors only when a dense model may score or normalise (not for a cnn alone).
    normalizing = config.score.normalize != "none"
    vectors = bundle.reads_vectors(config.score.framework, normalize=normalizing)
    embed = None
    if bundle.reads_embeddings(config.score.framework, normalize=normalizing):
        from ser_batch.features.ge2e import embed_windows

        encoder = bundle.encoder
        embed = lambda pieces: embed_windows(encoder, pieces)  # noqa: E731
    first = first_sample_needed(windows[0], config=settings.features, sample_rate=rate, frame_reach=reach)
    blocks = (block for _, block in iter_audio_blocks(Path(path), sample_rate=rate, block_s=config.score.block_s,
                                                      start_sample=first, channel=channel))
    for batch in stream_windows(blocks, sample_rate=rate, config=settings.features, first_sample=first,
                                windows=windows, frame_reach=reach, vectors=vectors, embed=embed):
        if not np.all(np.isfinite(batch.vectors)):
            raise FeatureError("features are not finite")
        yield batch


def file_windows(path: Path, *, bundle: Bundle, config: Config, channels: str = "mix",
                 windows: tuple[int, int | None] = (0, None), framework: str | None = None,
                 archive: ArchiveStats | None = None, info: AudioInfo | None = None) -> list[StreamResult]:
    """The windows of every stream of one file: one (``channels="mix"``) or one per channel
    (``split``), not yet scored (see :func:`attach_probabilities`). ``info``: the file's header,
    when the caller has probed it already (``score``'s driver does, once per file).

    With ``framework``, each block's windows are scored as they come and their feature
    vectors dropped, so that memory does not grow with the file's length (long files);
    the streams are then summarised already (with ``score.normalize = "archive"``, z-scored by
    ``archive``'s statistics). With ``score.normalize = "file"`` a stream needs all its windows
    before any can be scored: its vectors are kept (about 3 KB per window, 0.5 s of audio) and it
    is scored at its end."""
    info = info if info is not None else probe_audio(Path(path))
    if info.frames <= 0:
        raise FeatureError("no audio samples")
    n_fft, rate = bundle.config.features.n_fft, bundle.config.audio.sample_rate
    check_length(int(info.duration_s * rate), rate, min_samples=n_fft, needed_for=one_frame(n_fft, rate))
    streams: list[int | None] = [None] if channels == "mix" else list(range(info.channels))
    as_they_come = framework is not None and config.score.normalize != "file"
    by_archive = config.score.normalize == "archive"
    if by_archive and archive is None:
        raise BundleError("score.normalize = \"archive\" needs the archive's statistics (a first pass over it)")
    chosen_set = bundle.choose_set(info.sample_rate, by_archive)
    vector_stats, pooled_stats = archive.inputs(chosen_set) if by_archive else (None, None)
    keep = class_subset(bundle, config.score)
    results = []
    for channel in streams:
        result = StreamResult(info=info, channel=channel)
        probas = []
        for batch in stream_file_windows(Path(path), bundle=bundle, config=config, channel=channel, windows=windows):
            if as_they_come:
                vectors = batch.vectors
                if vector_stats is not None and vectors.shape[1]:
                    vectors = vector_stats.apply(vectors)
                probas.append(window_proba(bundle, vectors, framework=framework, model_set=chosen_set, keep=keep,
                                           frames=batch_frames([batch]),
                                           normalize=pooled_stats.apply if pooled_stats is not None else None,
                                           embeddings=batch.embeddings))
                batch = batch.without_inputs()
            result.windows.append(batch)
            result.summary.n_windows += len(batch.index)
            result.summary.speech_frames += batch.speech_frames
        result.speech = result.column("speech_ratio") >= config.score.min_speech_ratio
        if as_they_come:
            result.summary.model_set, result.summary.normalized = chosen_set, by_archive
            _summarise(result, np.concatenate(probas) if probas else np.zeros((0, len(keep or bundle.classes))))
        elif framework is not None:
            attach_probabilities(bundle, [result], framework=framework, score=config.score, archive=archive)
            result.windows = [w.without_inputs() for w in result.windows]
        results.append(result)
    return results


@dataclass(frozen=True)
class ArchiveStats:
    """Statistics of an archive's speech windows (``score --normalize archive``), per normalised model
    set: ``{set: {"vectors": GroupStats, "cnn": GroupStats}}``, the inputs of its dense models (window
    vectors) and of its cnn's head (pooled encoder statistics), whichever the set has."""

    sets: dict[str, dict[str, GroupStats]]

    @classmethod
    def from_sums(cls, sums: dict[str, dict[str, StatsSums]]) -> "ArchiveStats":
        return cls({name: {kind: part.stats() for kind, part in kinds.items() if part.n}
                    for name, kinds in sums.items()})

    def of(self, model_set: str, kind: str) -> GroupStats | None:
        return self.sets.get(model_set, {}).get(kind)

    def inputs(self, model_set: str) -> tuple[GroupStats | None, GroupStats | None]:
        """The statistics ``(vectors, cnn)`` a stream scored by ``model_set`` is z-scored by.

        Raises
        ------
        FeatureError
            If the archive has none for that set: its first pass met no speech that this set scores
            (no file at its rates, or only silence there; or a folder's stored statistics from runs
            of the other band), so the file cannot be normalised as the rest of the archive was.
        """
        if model_set not in self.sets:
            raise FeatureError(f"the archive's statistics (--normalize archive) have no speech windows of the "
                               f"{model_set!r} model set that would score this file (none at its sample rate in "
                               "the first pass): score it with --normalize file or none, or with an archive that has")
        return self.of(model_set, "vectors"), self.of(model_set, "cnn")


#: The function that z-scores a normalised cnn's pooled statistics ``(k, 2 * channels)``.
PooledNormalizer = Callable[[np.ndarray], np.ndarray]


def stream_inputs(bundle: Bundle, stream: StreamResult, *, score: ScoreConfig,
                  archive: ArchiveStats | None = None) -> tuple[np.ndarray, str, PooledNormalizer | None]:
    """The window vectors ``[shape=(k, n_features)]`` a stream is scored on, the model set that
    scores them, and how that set's cnn normalises its pooled statistics (None: plain); records the
    set and whether it is normalised in ``stream.summary``.

    The set of the stream's band (:meth:`Bundle.choose_set`). With ``score.normalize = "file"``
    and at least ``score.min_normalize_s`` seconds of speech, the vectors (and a normalised cnn's
    pooled statistics) are z-scored by the statistics of the stream's own speech windows and the
    normalised set scores them; a stream with less speech keeps the plain set (``summary.normalized``
    False). With ``"archive"``, every stream is z-scored by ``archive``'s statistics of its set.
    """
    vectors = np.concatenate([w.vectors for w in stream.windows]) if stream.windows else \
        np.zeros((0, 0), dtype=np.float32)
    settings = bundle.config
    speech_s = stream.summary.speech_frames * settings.features.hop_length / settings.audio.sample_rate
    pooled: PooledNormalizer | None = None
    if score.normalize == "archive":
        if archive is None:
            raise BundleError("score.normalize = \"archive\" needs the archive's statistics (a first pass over it)")
        name = bundle.choose_set(stream.info.sample_rate, True)
        vector_stats, pooled_stats = archive.inputs(name)
        if vectors.shape[1] and vector_stats is not None:
            vectors = vector_stats.apply(vectors)
        pooled = pooled_stats.apply if pooled_stats is not None else None
        normalize = True
    else:
        normalize = score.normalize == "file" and speech_s >= score.min_normalize_s and bool(stream.speech.any())
        if normalize:
            if vectors.shape[1]:
                vectors = fit_stats(vectors, stream.speech).apply(vectors)
            speech = stream.speech
            pooled = lambda values: fit_stats(values, speech).apply(values)  # noqa: E731 - the stream's own
    stream.summary.model_set = bundle.choose_set(stream.info.sample_rate, normalize)
    stream.summary.normalized = normalize
    return vectors, stream.summary.model_set, pooled


def archive_sums(path: Path, *, bundle: Bundle, config: Config, channels: str = "mix",
                 windows: tuple[int, int | None] = (0, None),
                 info: AudioInfo | None = None) -> dict[str, dict[str, StatsSums]]:
    """The first pass of ``score --normalize archive`` over one file (a range of its windows): per
    normalised model set that would score its streams, the sums of the inputs its models z-score
    (:class:`ser_batch.models.normalize.StatsSums` of the speech windows' vectors for its dense models,
    of its cnn's pooled statistics for a normalised cnn). Merged over the archive, they give
    :class:`ArchiveStats`.

    Raises
    ------
    AudioError, FeatureError
        If the file cannot be decoded or gives non-finite features.
    """
    info = info if info is not None else probe_audio(Path(path))  # the planner's probe, when given
    if info.frames <= 0:
        raise FeatureError("no audio samples")
    name = bundle.choose_set(info.sample_rate, True)
    members = dict(bundle.ensemble(name))
    framework = config.score.framework
    dense = [f for f in (members if framework == ENSEMBLE else [framework]) if f != "cnn" and f in members]
    cnn = None
    if "cnn" in members and framework in ("cnn", ENSEMBLE):
        model = bundle.model("cnn", members["cnn"])
        cnn = model if getattr(model, "normalized", False) else None
    sums: dict[str, StatsSums] = {}
    streams: list[int | None] = [None] if channels == "mix" else list(range(info.channels))
    for channel in streams:
        for batch in stream_file_windows(Path(path), bundle=bundle, config=config, channel=channel, windows=windows):
            speech = batch.speech_ratio >= config.score.min_speech_ratio
            parts = {}
            if dense:
                parts["vectors"] = StatsSums.of(batch.vectors, speech)
            if cnn is not None:
                parts["cnn"] = StatsSums.of(cnn.pool([batch.frames]), speech)
            for kind, part in parts.items():
                sums[kind] = sums[kind].merge(part) if kind in sums else part
    return {name: sums}


def merge_archive_sums(parts: Sequence[dict[str, dict[str, StatsSums]]]) -> dict[str, dict[str, StatsSums]]:
    """The sums of many files or shards (:func:`archive_sums`) added up, per set and input."""
    out: dict[str, dict[str, StatsSums]] = {}
    for part in parts:
        for name, kinds in part.items():
            for kind, sums in kinds.items():
                mine = out.setdefault(name, {})
                mine[kind] = mine[kind].merge(sums) if kind in mine else sums
    return out


def _summarise(stream: StreamResult, proba: np.ndarray) -> None:
    stream.proba = proba
    stream.summary.n_speech = int(stream.speech.sum())
    stream.summary.proba_sum = proba[stream.speech].sum(axis=0)


def attach_probabilities(bundle: Bundle, streams: Sequence[StreamResult], *, framework: str,
                         score: ScoreConfig | None = None, archive: ArchiveStats | None = None) -> None:
    """Score the windows of all ``streams`` not scored yet, one batched call of each model per
    model set (:func:`stream_inputs` picks each stream's), and summarise every stream (the mean
    of its windows with speech). ``score``: the scoring settings (default: built-in defaults);
    ``archive``: the statistics ``score.normalize = "archive"`` z-scores with."""
    score = score or ScoreConfig()
    keep = class_subset(bundle, score)
    by_set: dict[str, list[tuple[StreamResult, np.ndarray, PooledNormalizer | None]]] = {}
    for stream in streams:
        if stream.proba is None:
            vectors, name, pooled = stream_inputs(bundle, stream, score=score, archive=archive)
            by_set.setdefault(name, []).append((stream, vectors, pooled))
    for name, pending in by_set.items():
        frames = batch_frames([w for stream, _, _ in pending for w in stream.windows])
        sizes = [len(stream.speech) for stream, _, _ in pending]
        proba = window_proba(bundle, np.concatenate([v for _, v, _ in pending]), framework=framework, model_set=name,
                             keep=keep, frames=frames, normalize=_each(sizes, [p for _, _, p in pending]),
                             embeddings=batch_embeddings([w for stream, _, _ in pending for w in stream.windows]))
        at = 0
        for (stream, _, _), size in zip(pending, sizes):
            _summarise(stream, proba[at : at + size])
            at += size


def _each(sizes: list[int], normalizers: list[PooledNormalizer | None]) -> PooledNormalizer | None:
    """One normaliser of the windows of several streams laid end to end: each stream's own on its rows."""
    if all(n is None for n in normalizers):
        return None

    def apply(values: np.ndarray) -> np.ndarray:
        out, at = np.empty_like(values), 0
        for size, normalizer in zip(sizes, normalizers):
            part = values[at : at + size]
            out[at : at + size] = part if normalizer is None else normalizer(part)
            at += size
        return out

    return apply


def predict_files(paths: Sequence[Path], *, bundle: Bundle, framework: str = ENSEMBLE,
                  config: Config | None = None) -> list[dict[str, Any]]:
    """Emotion label and class probabilities for each file, exactly as ``score`` summarises it.

    Parameters
    ----------
    paths : audio files
    bundle : a loaded model bundle
    framework : "keras", "sklearn" or "both" (each model, plus their averaged ensemble)
    config : scoring settings (``score`` section); default: built-in defaults

    Returns
    -------
    list of dict
        One per file: ``{"path", "duration_s", "windows", "speech_windows", "model_set",
        "normalized", "predictions": {name: {"label", "probabilities"}}, "error"}``; a file that
        cannot be read has ``error`` set and no predictions; a file without speech has no
        predictions either.
    """
    from ser_batch.config import Config as _Config

    config = config or _Config()
    if framework not in SCORE_FRAMEWORKS:
        raise BundleError(f"unknown framework {framework!r}; use {', '.join(SCORE_FRAMEWORKS)}")
    names = bundle.frameworks if framework == ENSEMBLE else [framework]
    if framework == ENSEMBLE:  # each model whose inputs the ensemble has computed (a cnn-only one: no vectors)
        normalizing = config.score.normalize != "none"
        computed = {"cnn": True, "ge2e": bundle.reads_embeddings(ENSEMBLE, normalize=normalizing),
                    "keras": bundle.reads_vectors(ENSEMBLE, normalize=normalizing)}
        names = [f for f in names if computed.get(f, computed["keras"])]
    for name in names:
        bundle.model(name)  # fail early (missing or untrusted model) before any audio is decoded
    if bundle.aggregation != "segments":
        keep = class_subset(bundle, config.score)
        return [_predict_clip(Path(path), bundle=bundle, names=names, keep=keep) for path in paths]
    check_scoring_bundle(bundle, framework)
    check_normalize(bundle, config.score)
    keep = class_subset(bundle, config.score)
    config = config.replace(score={"framework": framework})  # the windows carry what its models read
    archive = None
    if config.score.normalize == "archive":  # the files given are the archive: a first pass over them
        found = []
        for path in paths:
            try:
                found.append(archive_sums(Path(path), bundle=bundle, config=config))
            except SerBatchError:
                continue  # (its error comes with its entry below)
        sums = merge_archive_sums(found)
        if any(part.n for kinds in sums.values() for part in kinds.values()):
            archive = ArchiveStats.from_sums(sums)
    results = []
    for path in paths:
        entry: dict[str, Any] = {"path": str(path), "duration_s": None, "windows": 0, "speech_windows": 0,
                                 "model_set": None, "normalized": False, "predictions": {}, "error": None}
        results.append(entry)
        try:
            stream = file_windows(Path(path), bundle=bundle, config=config, archive=archive)[0]
        except SerBatchError as exc:
            entry["error"] = str(exc)
            continue
        entry["duration_s"] = round(stream.info.duration_s, 3)
        entry["windows"] = stream.summary.n_windows
        entry["speech_windows"] = int(stream.speech.sum())
        vectors, model_set, pooled = stream_inputs(bundle, stream, score=config.score, archive=archive)
        entry["model_set"], entry["normalized"] = model_set, stream.summary.normalized
        probas = (_file_probas(bundle, vectors, names=names, model_set=model_set, keep=keep,
                              frames=batch_frames(stream.windows), rows=stream.speech, normalize=pooled,
                              embeddings=batch_embeddings(stream.windows),
                              ensemble=framework == ENSEMBLE and len(bundle.frameworks) > 1)
                  if stream.speech.any() else {})
        entry["predictions"] = _predictions(list(keep or bundle.classes), probas)
    return results


def _file_probas(bundle: Bundle, vectors: np.ndarray, *, names: list[str], model_set: str = GLOBAL,
                 keep: Sequence[str] | None, frames: Sequence[StreamFrames] | None = None,
                 rows: np.ndarray | None = None, ensemble: bool = False,
                 normalize: PooledNormalizer | None = None, embeddings: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """Each model's mean probabilities over the windows ``rows`` of ``vectors`` (all without it; and
    with ``ensemble`` the bundle's ensemble's), as ``score`` summarises a stream: every window's
    probabilities restricted to ``keep`` first, the ensemble's from the models' window probabilities
    averaged with the bundle's weights (as ``window_proba`` gives them)."""
    full = {name: bundle.predict_proba(vectors, framework=name, model_set=model_set, frames=frames,
                                       normalize=normalize, embeddings=embeddings) for name in names}
    if rows is not None:
        full = {name: proba[rows] for name, proba in full.items()}
    if ensemble:
        weights = bundle.ensemble_weights(model_set)
        full[ENSEMBLE] = sum(weights[name] * proba for name, proba in full.items() if name in weights)
    return {name: restrict(proba, bundle.classes, keep).mean(axis=0) for name, proba in full.items()}


def _predictions(classes: list[str], probas: dict[str, np.ndarray]) -> dict[str, Any]:
    return {name: {"label": classes[int(np.argmax(proba))],
                   "probabilities": {c: round(float(p), 4) for c, p in zip(classes, proba)}}
            for name, proba in probas.items()}


def _predict_clip(path: Path, *, bundle: Bundle, names: list[str], keep: Sequence[str] | None) -> dict[str, Any]:
    """A bundle of whole-clip vectors (fast, classic, or rich without windows): one vector per file."""
    from ser_batch.features.recipes import file_features

    entry: dict[str, Any] = {"path": str(path), "duration_s": None, "windows": 0, "speech_windows": 0,
                             "predictions": {}, "error": None}
    config = bundle.config.replace(features={"window_s": 0.0})
    try:
        features, info = file_features(path, config=config)
    except SerBatchError as exc:
        entry["error"] = str(exc)
        return entry
    entry["duration_s"] = round(info.duration_s, 3)
    probas = _file_probas(bundle, features.vector[None, :], names=names, keep=keep, ensemble=len(names) > 1)
    entry["predictions"] = _predictions(list(keep or bundle.classes), probas)
    return entry
