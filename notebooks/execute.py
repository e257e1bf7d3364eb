"""Run the notebooks as CI does: `python notebooks/execute.py [NAME ...] [--out DIR] [--timeout S]`.

Each `notebooks/NN-*.py` (jupytext percent format) is read with jupytext, executed top to bottom by
nbclient in a kernel running this interpreter, with notebooks/ as the working directory, and written
with its outputs to DIR/NN-*.ipynb (default test-artifacts/notebooks/, git-ignored). A NAME may be a
prefix (`01`, `02-model`); none runs them all. Exit status 1 if any notebook fails; the failing one
is still written, up to the cell that failed. tests/notebooks/test_notebooks.py calls `execute`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = ROOT / "test-artifacts" / "notebooks"
CELL_TIMEOUT = 300  # seconds a single cell may take before the run fails


def notebooks(names: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, or those whose names start with one of `names`."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]-*.py"))
    if not names:
        return found
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [p for p in found if p.stem.startswith(stem)]
        if not matches:
            raise SystemExit(f"execute.py: no notebook {name!r} (have: {', '.join(p.stem for p in found)})")
        chosen += [p for p in matches if p not in chosen]
    return chosen


def _kernel_manager():
    """A python3 kernel on sys.executable, whatever kernelspecs the machine has installed."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class ThisInterpreter(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name=f"Python 3 ({sys.executable})", language="python", name=kernel_name)

    return KernelManager(kernel_name="python3", kernel_spec_manager=ThisInterpreter())


def execute(source: Path | str, out_dir: Path | str = DEFAULT_OUT, *, timeout: int = CELL_TIMEOUT):
    """Execute one notebook; returns (the executed notebook, the .ipynb written, wall seconds).
    A failing cell raises nbclient's CellExecutionError after the partial notebook is written."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}.ipynb"
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, kernel_name="python3",
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no transport warnings
                            resources={"metadata": {"path": str(HERE)}})
    started = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - started
        nb.metadata["execution_seconds"] = round(seconds, 1)
        nbformat.write(nb, target)
    return nb, target, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names or prefixes (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the executed .ipynb go")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
    args = parser.parse_args(argv)
    from nbclient.exceptions import CellExecutionError

    failed = []
    for path in notebooks(args.names):
        try:
            _, target, seconds = execute(path, args.out, timeout=args.timeout)
            print(f"{path.stem}: {seconds:.1f} s → {target}", flush=True)
        except CellExecutionError as exc:
            failed.append(path.stem)
            print(f"{path.stem}: FAILED\n{exc}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
