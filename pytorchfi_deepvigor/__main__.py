"""``python -m pytorchfi_deepvigor``: the same command line as ``pytorchfi-deepvigor``."""

from pytorchfi_deepvigor.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
