"""`python -m svd_inbetween.cli ...` (e.g. under `torchrun -m`)."""
import sys

from . import main

sys.exit(main())
