"""The README's code blocks, and what the README test does with each: run it, or skip it for the reason the
README itself gives next to it.

A block whose first line is a comment starting with ``# not run by tests/docs`` is skipped as a whole; a shell
line ending in such a comment is left out of its block. Every other ``bash``, ``shell`` and ``python`` block
runs, in the order it appears in the README.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "# not run by tests/docs"
CODE = ("bash", "shell", "python")
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, first line number in the README, section and text."""

    lang: str
    line: int
    section: str
    text: str

    @property
    def skip_reason(self) -> str | None:
        """Why the whole block is not run, as the README says (None when it runs)."""
        first = next((ln.strip() for ln in self.text.splitlines() if ln.strip()), "")
        return _reason(first) if first.startswith(MARK) else None

    @property
    def skipped_lines(self) -> list[tuple[str, str]]:
        """Shell lines left out of a running block, with the README's reason."""
        if self.lang == "python":
            return []
        return [(ln.split(MARK)[0].strip(), _reason(ln[ln.index(MARK) :])) for ln in self._marked()]

    def _marked(self) -> list[str]:
        return [ln for ln in self.text.splitlines()[1:] if MARK in ln] if self.skip_reason is None else []

    @property
    def runnable(self) -> str:
        """The text that runs: the block without its marked lines."""
        marked = set(self._marked())
        lines = self.text.splitlines()
        return "\n".join(ln for i, ln in enumerate(lines) if i == 0 or ln not in marked) + "\n"


def _reason(comment: str) -> str:
    return comment[len(MARK) :].lstrip(" :(").rstrip(")").strip() or "no reason given"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced code block of the README in order (all languages; the test runs only ``CODE`` ones)."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(fence.group(1), i + 2, section, "\n".join(lines[i + 1 : end]) + "\n"))
            i = end
        i += 1
    return blocks


def describe(blocks: list[Block]) -> list[str]:
    """One line per code block: where it is and what the test does with it."""
    out = []
    for b in blocks:
        if b.lang not in CODE:
            out.append(f"README.md:{b.line} ({b.section}) {b.lang or 'text'}: output sample, not code")
        elif b.skip_reason is not None:
            out.append(f"README.md:{b.line} ({b.section}) {b.lang}: skipped: {b.skip_reason}")
        else:
            left_out = "".join(f"; line {cmd!r} skipped: {why}" for cmd, why in b.skipped_lines)
            out.append(f"README.md:{b.line} ({b.section}) {b.lang}: run{left_out}")
    return out


if __name__ == "__main__":
    print("\n".join(describe(readme_blocks())))
