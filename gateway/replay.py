"""python -m gateway.replay --file CAPTURE.jsonl [--rate N] [--config FILE]: write a
capture file (gateway.capture) into email.raw exactly as the gateway would have."""

import sys

from gateway.capture import main

if __name__ == "__main__":
    sys.exit(main())
