"""captioner's Hydra launchers (Hydra finds plugins only in the hydra_plugins namespace)."""
