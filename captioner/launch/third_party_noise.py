"""Known messages from libraries that say nothing about this run, silenced one by one.

Each filter matches one message at its source; anything else from the same library still shows.
"""

from __future__ import annotations

import logging
import warnings

# pytorch_lightning/trainer/connectors/logger_connector/logger_connector.py: an advert for
# LitLogger on every Trainer, through rank_zero_info (which logs to these loggers).
LIGHTNING_TIP_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
LIGHTNING_TIP = "try installing [litlogger]"
# torch/utils/_pytree.py deprecates LeafSpec; pytorch_lightning/utilities/_pytree.py still builds one.
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_known_noise() -> None:
    """Idempotent: call it before building a Trainer."""
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)
    for name in LIGHTNING_TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.text == LIGHTNING_TIP for f in logger.filters):
            logger.addFilter(_DropMessage(LIGHTNING_TIP))
