"""`python -m captioner.caption CHECKPOINT IMAGE_OR_FOLDER ...`: caption your own images.

The command's code is captioner/inference/caption.py; this module only names it.
"""

from captioner.inference.caption import main

if __name__ == "__main__":
    main()
