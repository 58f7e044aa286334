"""The CPU demo: python tools/demo.py [--quick] [--out DIR]  (see rdd/engine/demo.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rdd.engine.demo import main  # noqa: E402

if __name__ == '__main__':
    main()
