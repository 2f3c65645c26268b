import sys

from skit_release.cli import main

sys.exit(main())
