"""PSNR of the exemplar engine against the true colours, on photo pairs bundled with scikit-image.

Run: `python -m bench.exemplar_quality` prints the Markdown table shown in docs/exemplar.md. The
measurement is devkit/exemplar_quality.py's, which tests/engines/test_exemplar.py runs too, so
the table and the test measure one thing.
"""

from __future__ import annotations

import sys

from devkit.exemplar_quality import PAIRS, evaluate, markdown_table


def main() -> None:
    rows = []
    for pair in PAIRS:
        row = evaluate(pair)
        print(f"{row.pair}: {row.seconds:.2f} s", file=sys.stderr, flush=True)
        rows.append(row)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
