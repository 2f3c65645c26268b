import sys

from skit_pipelines_cli.main import main

sys.exit(main())
