"""`python train.py [-m] dataset=... cnn=... rnn=... key=value` in a checkout: the same command as
the installed `captioner-train` (its code and configs: captioner/train.py, captioner/conf/)."""

from captioner.train import cli

if __name__ == "__main__":
    cli()
