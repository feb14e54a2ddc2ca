"""`python -m benchmarks` (from the repository root) runs the side-by-side proxy benchmark."""

import sys

from benchmarks.proxy_bench import main

sys.exit(main())
