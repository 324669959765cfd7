"""Tests for :mod:`ser_batch.cli` (the ``extract`` verb) and the ``jobs/extract.py`` entrypoint.

The commands run in-process with click's CliRunner, so they reuse the session's Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from ser_batch import schema
from ser_batch.cli import main
from ser_batch.cli.root import EXIT_FILE_ERRORS
from ser_batch.data import parts

from conftest import CORPUS_BROKEN, CORPUS_GOOD, write_audio

ROOT = Path(__file__).resolve().parents[1]
N_FILES = len(CORPUS_GOOD) + len(CORPUS_BROKEN)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def clean_corpus(tmp_path: Path) -> Path:
    """Three readable files only, for runs that must not report errors."""
    root = tmp_path / "clean"
    for i, name in enumerate(["Actor_01/03-01-05-01-01-01-01.wav", "Actor_02/03-01-02-01-01-01-02.wav",
                              "calls/c.flac"]):
        write_audio(root / name, duration_s=0.5, seed=i)
    return root


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- help -------------------------------------------------------------------------------


def test_group_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output and "extract" in result.output


def test_extract_help() -> None:
    result = invoke("extract", "--help")
    assert result.exit_code == 0
    for option in ("--out", "--recipe", "--labels", "--augment", "--overwrite", "--resume", "--fail-on-error",
                   "--set", "--config", "--no-progress"):
        assert option in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and "ser-batch" in result.output


def test_jobs_entrypoint_help() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "extract.py"), "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Extract emotion features" in result.stdout and "--resume" in result.stdout


def test_embedded_ray_keeps_token_auth_without_its_notice(clean_corpus: Path, tmp_path: Path) -> None:
    # A real process (not CliRunner): Ray's notice goes to the process's stderr at start-up.
    script = ("import os, sys\n"
              "from ser_batch.cli import main\n"
              "main(sys.argv[1:], standalone_mode=False)\n"
              "print('auth mode:', os.environ.get('RAY_AUTH_MODE'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", script, "extract", str(clean_corpus), "--out",
                             str(tmp_path / "out"), "--no-progress", "--num-cpus", "1"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 files, 0 errors, 1 part in ")
    assert "auth mode: token" in result.stdout  # Ray's default, token authentication, is still on
    assert "Token authentication" not in result.stderr, result.stderr


# --- extract ---------------------------------------------------------------------------


def test_extract_runs_and_prints_summary(ray_session: None, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    result = invoke("extract", corpus, "--out", out, "--no-progress", "--set", "extract.shard_size=4")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == result.stdout.strip().splitlines()[0]  # one line
    assert result.stdout.startswith(f"{N_FILES} files, 3 errors, 3 parts in ")
    assert result.stdout.strip().endswith(f"-> {out}")
    assert parts.read_parts(out).num_rows == N_FILES
    # Which files failed, and why, on stderr (the issue: "3 files, 1 errors" and nothing more).
    assert result.stderr.splitlines() == [
        f"3 of {N_FILES} files failed:",
        *(f"  {path}: {reason}" for path, reason in sorted({
            "broken/empty.wav": "empty file",
            "broken/notes.wav": "not an audio file (unrecognised format)",
            "broken/random_bytes.wav": "not an audio file (unrecognised format)"}.items())),
    ]


def test_extract_help_lists_the_augmentations() -> None:
    from ser_batch.augmentations import AUGMENT_FORMS

    text = " ".join(invoke("extract", "--help").output.split())
    assert ", ".join(AUGMENT_FORMS) in text.replace("- ", "-")


def test_extract_augment_option(ray_session: None, clean_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    result = invoke("extract", clean_corpus, "--out", out, "--no-progress",
                    "--augment", "telephone-pcm, telephone-ulaw")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 files, 0 errors, 6 augmented rows (telephone-pcm, telephone-ulaw), 1 part in ")
    table = parts.read_parts(out)
    assert sorted(table.column(schema.AUGMENT).to_pylist(), key=str) == \
        [None] * 3 + ["telephone-pcm"] * 3 + ["telephone-ulaw"] * 3
    assert 'augment = ["telephone-pcm", "telephone-ulaw"]' in (out / parts.CONFIG).read_text()
    # The option wins over the config; an empty one turns augmentation off.
    result = invoke("extract", clean_corpus, "--out", tmp_path / "plain", "--no-progress", "--augment", "",
                    "--set", "extract.augment=gain-3db")
    assert result.exit_code == 0 and result.stdout.startswith("3 files, 0 errors, 1 part in "), result.output


def test_extract_unknown_augmentation_is_one_line(tmp_path: Path, clean_corpus: Path) -> None:
    result = invoke("extract", clean_corpus, "--out", tmp_path / "o", "--augment", "telephone-gsm")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown augmentation 'telephone-gsm' (known forms: telephone-pcm")
    assert not (tmp_path / "o").exists()


def test_extract_help_lists_the_configured_extensions() -> None:
    from ser_batch.config import Config

    result = invoke("extract", "--help")
    assert " ".join(Config().audio.extensions) in " ".join(result.output.split())


def test_missing_input_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("extract", tmp_path / "nope", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("job", ["extract", "score", "train"])
def test_a_missing_input_exits_2_from_every_command(tmp_path: Path, job: str) -> None:
    """The same answer from every command: click's usage error naming the path, exit 2."""
    result = invoke(job, tmp_path / "nope", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"'{tmp_path / 'nope'}' does not exist." in result.output.splitlines()[-1]
    assert result.output.splitlines()[-1].startswith("Error: Invalid value for '")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override", ["score.chunk_s", "=3", "nokey=1", "score=1", "score.chunk_s=abc"])
@pytest.mark.parametrize("job", ["extract", "score", "train"])
def test_a_malformed_set_exits_2_from_every_job(clean_corpus: Path, tmp_path: Path, job: str, override: str) -> None:
    result = invoke(job, clean_corpus, "--out", tmp_path / "out", "--set", override)
    assert_one_line_error(result, 2, "error: ")
    assert not (tmp_path / "out").exists()


def test_report_on_a_folder_without_scores_says_so_in_english(tmp_path: Path) -> None:
    result = invoke("report", tmp_path)
    assert_one_line_error(result, 1, f"error: {tmp_path} holds no scores: no per-file results in "
                                     f"{tmp_path / 'files'} (run `ser-batch score` first)")


def test_folder_without_audio(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    result = invoke("extract", tmp_path / "in", "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(result, 1, "no audio files", str(tmp_path / "in"))


def test_existing_output_needs_overwrite(ray_session: None, clean_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    assert invoke("extract", clean_corpus, "--out", out, "--no-progress").exit_code == 0
    result = invoke("extract", clean_corpus, "--out", out, "--no-progress")
    assert_one_line_error(result, 1, "already holds results", "--overwrite")
    result = invoke("extract", clean_corpus, "--out", out, "--no-progress", "--overwrite")
    assert result.exit_code == 0, result.output
    result = invoke("extract", clean_corpus, "--out", out, "--no-progress", "--resume")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("nothing left to do: 1 part of a finished run") and not result.stderr


def test_fail_on_error(ray_session: None, corpus: Path, tmp_path: Path) -> None:
    result = invoke("extract", corpus, "--out", tmp_path / "features", "--no-progress", "--fail-on-error")
    assert result.exit_code == EXIT_FILE_ERRORS == 3
    assert f"{N_FILES} files, 3 errors" in result.stdout  # the job still ran to the end
    assert result.stderr.startswith(f"3 of {N_FILES} files failed:")
    assert result.stderr.splitlines()[-1] == "error: 3 files failed (--fail-on-error)"
    assert parts.read_manifest(tmp_path / "features") is not None


def test_fail_on_error_without_errors(clean_corpus: Path, tmp_path: Path) -> None:
    """Nothing failed: exit 0, the summary alone, no failure report and no --fail-on-error line."""
    result = invoke("extract", clean_corpus, "--out", tmp_path / "f", "--no-progress", "--fail-on-error",
                    "--in-process")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 files, 0 errors, 1 part in ") and result.stderr == ""
    assert parts.read_parts(tmp_path / "f").column(schema.ERROR).null_count == 3


def test_without_fail_on_error_file_errors_exit_zero(corpus: Path, tmp_path: Path) -> None:
    """Files failed: still exit 0 without --fail-on-error, but the failures are reported and recorded."""
    result = invoke("extract", corpus, "--out", tmp_path / "features", "--no-progress", "--in-process")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{N_FILES} files, 3 errors") and "--fail-on-error" not in result.stderr
    assert result.stderr.startswith(f"3 of {N_FILES} files failed:") and "broken/empty.wav: empty file" in result.stderr
    errors = parts.read_parts(tmp_path / "features").column(schema.ERROR).to_pylist()
    assert sum(e is not None for e in errors) == 3 and parts.read_manifest(tmp_path / "features")["errors"] == 3


def test_in_process_and_an_address_exclude_each_other(clean_corpus: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke("extract", clean_corpus, "--out", tmp_path / "o", "--in-process", "--address", "10.0.0.1:6379")
    assert result.exit_code == 2 and "--in-process runs the job in this process" in result.output
    assert not (tmp_path / "o").exists()
    # An address from the environment is not the user's choice on this command: --in-process wins.
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    result = invoke("extract", clean_corpus, "--out", tmp_path / "o", "--in-process", "--no-progress")
    assert result.exit_code == 0, result.output
    assert parts.read_manifest(tmp_path / "o")["executor"] == "in-process"


def test_every_job_command_has_the_runtime_options() -> None:
    for job in ("extract", "train", "score", "demo"):
        help_text = invoke(job, "--help").output
        assert all(option in help_text for option in ("--num-cpus", "--address", "--in-process")), job


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("features.n_fft=abc", "features.n_fft must be of type int, got 'abc'"),
        ("features.n_fft=1000", "features.n_fft must be a power of two"),
        ("features.nfft=1024", "unknown config key features.nfft"),
        ("features.n_fft", "--set expects section.key=value"),
    ],
)
def test_bad_override(clean_corpus: Path, tmp_path: Path, override: str, fragment: str) -> None:
    result = invoke("extract", clean_corpus, "--out", tmp_path / "out", "--set", override)
    assert_one_line_error(result, 2, fragment)  # a refused setting is bad usage
    assert not (tmp_path / "out").exists()


def test_bad_config_file(clean_corpus: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[features]\nrecipe = "foo"\n')
    result = invoke("extract", clean_corpus, "--out", tmp_path / "out", "--config", config)
    assert_one_line_error(result, 2, "features.recipe must be one of fast, classic")


def test_recipe_classic(ray_session: None, clean_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    result = invoke("extract", clean_corpus, "--out", out, "--no-progress", "--recipe", "classic")
    assert result.exit_code == 0, result.output
    meta = schema.read_metadata(parts.read_parts(out).schema)
    assert meta["recipe"] == "classic"
    assert meta["config"]["features"]["recipe"] == "classic"
    assert "recipe = \"classic\"" in (out / parts.CONFIG).read_text()


def test_shard_size_override_changes_parts(ray_session: None, clean_corpus: Path, tmp_path: Path) -> None:
    counts = {}
    for size in (1, 2):
        out = tmp_path / f"size{size}"
        result = invoke("extract", clean_corpus, "--out", out, "--no-progress",
                        "--set", f"extract.shard_size={size}")
        assert result.exit_code == 0, result.output
        counts[size] = len(parts.existing_parts(out))
        assert sum(pq.read_metadata(p).num_rows for p in parts.existing_parts(out).values()) == 3
    assert counts == {1: 3, 2: 2}


def test_config_file_and_labels_option(ray_session: None, clean_corpus: Path, tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text("[extract]\nshard_size = 1\n\n[audio]\nsample_rate = 8000\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ncalls/c.flac,calm\n")
    out = tmp_path / "features"
    result = invoke("extract", clean_corpus, "--out", out, "--no-progress", "--config", config,
                    "--labels", labels)
    assert result.exit_code == 0, result.output
    table = parts.read_parts(out)
    assert len(parts.existing_parts(out)) == 3
    assert schema.read_metadata(table.schema)["config"]["audio"]["sample_rate"] == 8000
    emotions = dict(zip(table.column(schema.PATH).to_pylist(), table.column(schema.EMOTION).to_pylist()))
    assert emotions == {"Actor_01/03-01-05-01-01-01-01.wav": "angry", "Actor_02/03-01-02-01-01-01-02.wav": "calm",
                        "calls/c.flac": "calm"}


def test_overwrite_and_resume_exclude_each_other(clean_corpus: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["extract", str(clean_corpus), "--out", str(tmp_path / "o"),
                                       "--overwrite", "--resume"])
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_unwritable_output_is_a_one_line_error(ray_session: None, clean_corpus: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is needed\n")
    result = CliRunner().invoke(main, ["extract", str(clean_corpus), "--out", str(blocker / "sub" / "out")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_too_long_file_becomes_an_error_row(ray_session: None, tmp_path: Path) -> None:
    write_audio(tmp_path / "in" / "long.wav", duration_s=3.0)
    write_audio(tmp_path / "in" / "short.wav", duration_s=1.0)
    result = CliRunner().invoke(main, ["extract", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                                       "--set", "audio.max_file_s=2.0"])
    assert result.exit_code == 0, result.output
    errors = dict(zip(*[pq.read_table(next((tmp_path / "o").glob("part-*.parquet")))[c].to_pylist()
                        for c in (schema.PATH, schema.ERROR)]))
    assert errors["short.wav"] is None
    assert "file is 3 s long, over audio.max_file_s = 2 s" in errors["long.wav"]


def test_impossible_feature_settings_fail_once_before_the_job(clean_corpus: Path, tmp_path: Path) -> None:
    # 250 Hz STFT bins cannot resolve a 25-50 Hz contrast band: no file could succeed.
    result = CliRunner().invoke(main, ["extract", str(clean_corpus), "--out", str(tmp_path / "o"),
                                       "--set", "features.n_fft=64", "--set", "features.hop_length=16",
                                       "--set", "features.n_mels=16", "--set", "features.n_mfcc=13",
                                       "--set", "features.contrast_fmin=25.0"])
    assert result.exit_code == 2
    assert result.output.startswith("error: these feature settings cannot work on any file")
    assert not (tmp_path / "o").exists()


# --- hostile settings and Ctrl-C (issue 16, points 6 and 8) ------------------------------------


@pytest.mark.parametrize("override", ["score.chunk_s=nan", "ray.max_retries=99999999999999999999",
                                      "score.block_s=nan", "score.block_s=1e-9", "features.db_floor=-inf"])
@pytest.mark.parametrize("job", ["extract", "score", "train"])
def test_a_setting_that_is_not_a_usable_number_is_bad_usage(clean_corpus: Path, tmp_path: Path, job: str,
                                                            override: str) -> None:
    result = invoke(job, clean_corpus, "--out", tmp_path / "out", "--set", override)
    assert_one_line_error(result, 2, f"error: {override.split('=')[0]} must be a ")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_in_any_command_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ser_batch.reports import score_page

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(score_page, "write_score_report", interrupted)
    result = invoke("report", tmp_path)
    assert result.exit_code == 130 and "interrupted (Ctrl-C)" in result.stderr
    assert "Aborted!" not in result.output


def test_sigterm_ends_a_job_and_releases_its_output(tmp_path: Path) -> None:
    """``jobs stop`` and schedulers send SIGTERM: the command exits (status 15, as Ray's driver
    does) through its cleanup, so OUT's lock is gone, also before any runtime is up (here none)."""
    import signal
    import time

    for i in range(6):
        write_audio(tmp_path / "in" / f"{i}.wav", duration_s=30.0, seed=i)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "-m", "ser_batch.cli", "score", str(tmp_path / "in"), "--out",
                                str(out), "--in-process", "--no-progress", "--set", "score.shard_files=1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (out / ".lock").exists(), process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 15, stderr
    assert not (out / ".lock").exists() and "Traceback" not in stderr


def test_sigint_exits_130_in_a_real_process() -> None:
    """A real SIGINT, in the installed entry point's way (standalone click), not click's ``Aborted!`` and 1."""
    import signal

    script = ("import sys, time\n"
              "from ser_batch.cli import main\n"
              "@main.command()\n"
              "def nap():\n"
              "    print('ready', flush=True)\n"
              "    time.sleep(60)\n"
              "main(['nap'])\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=ROOT)
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Aborted!" not in stderr and "Traceback" not in stderr and "interrupted (Ctrl-C)" in stderr


# --- predict: a line for every file (issue 25) ---------------------------------------------


def test_predict_prints_a_line_for_every_file_no_speech_included(tmp_path: Path) -> None:
    """Issue 25: `predict speech.wav dc_only.wav square.wav` printed one line and exited 0; the files
    without speech were in --json only. Each file now gets its line."""
    import numpy as np
    import soundfile as sf

    write_audio(tmp_path / "speech.wav", duration_s=3.0, seed=1)
    t = np.arange(32_000) / 16_000
    sf.write(tmp_path / "dc_only.wav", np.full(32_000, 0.3, dtype=np.float32), 16_000)
    sf.write(tmp_path / "square.wav", (0.3 * np.sign(np.sin(2 * np.pi * 200 * t))).astype(np.float32), 16_000)
    sf.write(tmp_path / "silence.wav", np.zeros(8_000, dtype=np.float32), 16_000)
    names = ["speech.wav", "dc_only.wav", "square.wav", "silence.wav"]
    result = CliRunner().invoke(main, ["predict", *[str(tmp_path / n) for n in names]])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split("  ")[0] for line in lines if " both " in line] == [str(tmp_path / "speech.wav")]
    assert lines[-3:] == [f"{tmp_path / 'dc_only.wav'}  no speech (none of its 2 windows has any: no emotion to give)",
                          f"{tmp_path / 'square.wav'}  no speech (none of its 2 windows has any: no emotion to give)",
                          f"{tmp_path / 'silence.wav'}  no speech (its one window has none: no emotion to give)"]
    assert {line.split("  ")[0] for line in lines} == {str(tmp_path / n) for n in names}
