"""`python -m captioner.evaluate CHECKPOINT`: score a checkpoint on any split, any decoding.

The command's code is captioner/inference/evaluate.py; this module only names it.
"""

from captioner.inference.evaluate import main

if __name__ == "__main__":
    main()
