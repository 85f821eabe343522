"""``python -m instanseg_scnp`` (and ``torchrun -m instanseg_scnp``): the command line."""

from instanseg_scnp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
