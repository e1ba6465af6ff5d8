"""The Hydra configs of `captioner-train` and `captioner-prepare`: a package, so that Hydra finds
them where the package is installed."""
