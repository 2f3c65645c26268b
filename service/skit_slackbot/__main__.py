import sys

from skit_slackbot.main import main

sys.exit(main())
