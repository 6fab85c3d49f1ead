"""copytrace as a python-threatexchange extension, through the real `threatexchange` CLI (its
config kept in a temporary HOME): a bank exported from a real index, the extension added, a
photo hashed, and an edited copy matched to the bank of its original only.

Skips when the `threatexchange` extra is not installed. With $COPYTRACE_TX_TRANSCRIPT set, the
commands and their output are written there as markdown.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from copytrace.app.threatexchange import decode_hash
from copytrace.app.threatexchange.bank import write_bank
from copytrace.indexing.updates import remove
from copytrace.pipelines.build import build_index

from photos import jpeg_bytes, photo

TX = Path(sys.executable).parent / "threatexchange"
EXTENSION = "copytrace.app.threatexchange.extension"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TX.exists(), reason="the threatexchange extra is not installed "
                                               "(pip install 'copytrace[threatexchange]')"),
]


def banner_copy(path: Path) -> Path:
    """The astronaut, cropped, with a caption bar: PDQ moves far, the descriptor does not."""
    img = Image.fromarray(np.ascontiguousarray(photo("astronaut")[30:482, 30:482]))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 400, 452, 452), fill=(20, 20, 20))
    draw.text((12, 415), "viral repost", fill=(255, 255, 255))
    path.write_bytes(jpeg_bytes(img, 70))
    return path


class Shell:
    """Runs commands in a temporary HOME and keeps a transcript."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.env = {**os.environ, "HOME": str(home)}
        self.cwd = cwd
        self.log: list[tuple[str, str]] = []

    def __call__(self, *args: str, shown: str) -> str:
        out = subprocess.run(list(args), env=self.env, cwd=self.cwd, capture_output=True,
                             text=True, timeout=600)
        text = (out.stdout + out.stderr).strip()
        self.log.append((shown, text))
        assert out.returncode == 0, f"{shown}\n{text}"
        return out.stdout

    def transcript(self) -> str:
        def short(text: str) -> str:  # a descriptor hash is 680 characters of base64
            return re.sub(r"([0-9a-f]{12}\.[A-Za-z0-9+/]{24})[A-Za-z0-9+/=]+", r"\1…", text)

        return "\n".join(f"```\n$ {cmd}\n{short(text)}\n```\n" for cmd, text in self.log)


def test_threatexchange_cli_hashes_and_matches_with_copytrace(tmp_path, photos_dir):
    index = tmp_path / "index"
    build_index(photos_dir, index, use_ray=False, show_progress=False)
    home = tmp_path / "home"
    home.mkdir()
    sh = Shell(home, tmp_path)
    copytrace = [sys.executable, "-m", "copytrace.app.cli"]

    out = sh(*copytrace, "tx", "bank", "--index", str(index), "--out", "bank.txt",
             shown="copytrace tx bank --index index --out bank.txt")
    assert out.startswith("24 hashes")  # 12 images x (copytrace, pdq)
    rows = list(csv.DictReader((tmp_path / "bank.txt.ids.csv").open()))
    for name, keep in (("astronaut.txt", lambda r: r["image_id"] == "astronaut"),
                       ("others.txt", lambda r: r["image_id"] != "astronaut")):
        (tmp_path / name).write_text("".join(f"{r['signal_type']} {r['hash']}\n" for r in rows if keep(r)))

    out = sh(str(TX), "config", "extensions", "add", EXTENSION,
             shown=f"threatexchange config extensions add {EXTENSION}")
    assert "copytrace - CopytraceSignal" in out
    for collab, file in (("astronaut-bank", "astronaut.txt"), ("others-bank", "others.txt")):
        sh(str(TX), "config", "collab", "edit", "local_file", "--create", collab,
           "--filename", str(tmp_path / file),
           shown=f"threatexchange config collab edit local_file --create {collab} --filename $PWD/{file}")
    out = sh(str(TX), "fetch", shown="threatexchange fetch")

    # The CLI's hash of the original file is the vector the index stored for it, and its PDQ is
    # the catalog's, bit for bit.
    out = sh(str(TX), "hash", "photo", str(photos_dir / "astronaut.jpg"),
             shown="threatexchange hash photo astronaut.jpg")
    hashes = dict(line.split(" ", 1) for line in out.strip().splitlines())
    stored = {(r["signal_type"]): r["hash"] for r in rows if r["image_id"] == "astronaut"}
    key, cli_vector = decode_hash(hashes["copytrace"])
    bank_key, bank_vector = decode_hash(stored["copytrace"])
    assert key == bank_key and float(cli_vector @ bank_vector) > 0.999
    assert hashes["pdq"] == stored["pdq"]

    banner_copy(tmp_path / "repost.jpg")
    out = sh(str(TX), "hash", "photo", "repost.jpg", shown="threatexchange hash photo repost.jpg")
    repost = dict(line.split(" ", 1) for line in out.strip().splitlines())
    out = sh(str(TX), "match", "photo", "repost.jpg", shown="threatexchange match photo repost.jpg")
    lines = out.strip().splitlines()
    assert any(line.startswith("copytrace ") and "(astronaut-bank)" in line for line in lines), out
    assert not any("(others-bank)" in line for line in lines), out
    distance = float(next(line for line in lines if line.startswith("copytrace ")).split()[1])
    assert abs((1 - distance) - float(decode_hash(repost["copytrace"])[1] @ bank_vector)) < 2e-3

    target = os.environ.get("COPYTRACE_TX_TRANSCRIPT")
    if target:
        pdq = bin(int(repost["pdq"], 16) ^ int(stored["pdq"], 16)).count("1")
        Path(target).write_text(
            "# copytrace as a python-threatexchange signal type: CLI transcript\n\n"
            "Made by tests/test_threatexchange.py (HOME is a temporary folder; `index` is a "
            "copytrace index of the 12 scikit-image photos; repost.jpg is the astronaut photo "
            "cropped by 6 %, with a caption bar, JPEG quality 70). Descriptor hashes are "
            "shortened here (each is 684 characters).\n\n" + sh.transcript()
            + f"\nPDQ distance repost.jpg -> astronaut.jpg: {pdq} bits (PDQ's match threshold is "
            f"31), so only the copytrace signal matches. copytrace distance = 1 - cosine; the "
            f"match threshold is the calibration's global-only decision point.\n")

    # A removed image is no longer searchable, so it leaves the bank too.
    remove(index, ["coins"])
    assert write_bank(index, tmp_path / "after-remove.txt") == 22
    kept = {r["image_id"] for r in csv.DictReader((tmp_path / "after-remove.txt.ids.csv").open())}
    assert "coins" not in kept and len(kept) == 11
