"""Entry point of the `xiaobao` console script.

Errors the user can act on (bad data, an unloadable model, a bad option) end in one line on stderr and
exit status 2; a promotion refused because the challenger scores worse, in status 3; set XIAOBAO_DEBUG=1
to see the traceback of anything else.

`main` reads the model settings (XIAOBAO_REGISTRY, XIAOBAO_ENCODER, XIAOBAO_CACHE: `models.settings`) once
and runs the command with them in scope; the service commands' own `Settings` read theirs.
"""

from __future__ import annotations

import argparse
import os
import sys

from models.encoder import cli as encoder_cli
from models.errors import ModelLoadError
from models.settings import ModelSettings, in_scope
from service import cli as service_cli
from training import cli as training_cli
from training.base import PromotionRefused


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xiaobao", description="消保预警: complaint-risk early warning")
    sub = parser.add_subparsers(dest="command", required=True)
    training_cli.register(sub, export_outcomes=service_cli.export_outcomes)
    service_cli.register(sub)
    encoder_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with in_scope(ModelSettings.from_env()):
            args.func(args)
    except PromotionRefused as exc:  # not an error in the input: scripts tell it apart by the status
        print(f"xiaobao {args.command}: {exc}", file=sys.stderr)
        return 3
    except (*training_cli.KNOWN_ERRORS, *service_cli.KNOWN_ERRORS, ModelLoadError) as exc:
        print(f"xiaobao {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xiaobao: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not bad input: still one line unless asked for more
        if os.environ.get("XIAOBAO_DEBUG"):
            raise
        print(f"xiaobao {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set XIAOBAO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
