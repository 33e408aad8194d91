"""What a run prints: known third-party warnings filtered, a short first screen, and every warning repeated at
the end.

* :data:`KNOWN_WARNINGS` are warnings of RecBole 1.2.1 and its dependencies on today's stack that say nothing about
  the user's run (pandas FutureWarnings, the GradScaler deprecation, ...). :func:`quiet_known_warnings` filters them
  in the command lines, as pyproject.toml's ``filterwarnings`` does in the tests (a test keeps both lists equal).
* :func:`init_run_logger` is RecBole's ``init_logger``, after which the config dump and the model's module tree go
  to the log file only (the console shows the model's name and size, the data and the progress), and the changes
  the plugin's yaml made to a stock model's RecBole defaults are logged.
* :func:`collect_warnings` records every warning of a run (``warnings.warn`` and WARNING log records) and
  :func:`warning_summary` repeats them, once each, after the run.
"""

import contextlib
import logging
import sys
import warnings

# (message regex, category, module regex): matched as ``warnings.filterwarnings`` matches them.
KNOWN_WARNINGS = [
    # RecBole 1.2.1 on pandas 2.x: fillna(inplace=True) through chained assignment, Series.agg(len)
    ("A value is trying to be set on a copy of a DataFrame or Series through chained assignment", "FutureWarning",
     "recbole"),
    ("using <built-in function len> in Series.agg cannot aggregate", "FutureWarning", "recbole"),
    # RecBole's graph models (NGCF, LightGCN, ...): torch.sparse.FloatTensor
    ("torch.sparse.SparseTensor", "UserWarning", "recbole"),
    # RecBole's trainer: torch.cuda.amp.GradScaler(...)
    ("`torch.cuda.amp.GradScaler", "FutureWarning", "recbole"),
    # thop (RecBole's FLOPs count): distutils' LooseVersion
    ("distutils Version classes are deprecated", "DeprecationWarning", "thop"),
    # RecBole's Interaction.sort: np.argsort on a torch tensor (numpy 2 attributes it to numpy itself)
    ("__array_wrap__ must accept context and return_scalar", "DeprecationWarning", "numpy"),
    # matplotlib 3.7 (the floor) on pyparsing 3.3: camelCase pyparsing names
    ("'[A-Za-z]+' deprecated - use '[a-z_]+'", "DeprecationWarning", "matplotlib"),
]

FILE_ONLY = {"genrec_file_only": True}  # logger.info(..., extra=FILE_ONLY): the log file, not the console


def quiet_known_warnings():
    """Ignore :data:`KNOWN_WARNINGS` in this process (a warning of the plugin itself is never filtered), and faiss's
    INFO lines about the CPU instructions it loads."""
    import builtins

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=getattr(builtins, category), module=module)


class _ConsoleFilter(logging.Filter):
    def filter(self, record):
        return not getattr(record, "genrec_file_only", False)


def init_run_logger(config):
    """RecBole's ``init_logger(config)``; then records logged with ``extra=FILE_ONLY`` skip the console, and the
    plugin's changes to a stock model's RecBole defaults (``Config.genrec_changed_defaults``) are logged."""
    from recbole.utils import init_logger

    init_logger(config)
    root = logging.getLogger()
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, _ConsoleFilter) for f in handler.filters):
            handler.addFilter(_ConsoleFilter())
    if _collector is not None and _collector not in root.handlers:
        root.addHandler(_collector)  # added after init_logger: its basicConfig does nothing once root has a handler
    files = [h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)]
    if files:
        root.info(f"{config['model']} on {config['dataset']}; every setting of this run is in {files[-1]}")
    for key, recbole_value, value, source in getattr(config, "genrec_changed_defaults", []):
        root.info(f"{config['model']} (a RecBole model) runs with {key}: {value!r} instead of RecBole's default "
                  f"{recbole_value!r}, set by {source}; pass --{key}=... to choose")


class _Collector(logging.Handler):
    """Records WARNING messages. Attached to the plugin's logger from the start of a run and to the root logger
    once RecBole's handlers are there; before that it also prints the plugin's warnings (one line each)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        if getattr(record, "genrec_collected", False):
            return
        message = record.getMessage()
        if self.add(message) and not logging.getLogger().handlers:
            print(f"{record.levelname}  {message}", file=sys.stderr)

    def add(self, message):
        """True when ``message`` is new."""
        message = " ".join(str(message).split())
        if message in self.messages:
            return False
        self.messages.append(message)
        return True


_collector = None


@contextlib.contextmanager
def collect_warnings():
    """Record the warnings of the enclosed run; yields the list of their messages (each once, in order).

    A ``warnings.warn`` is shown as one line (in the run's log once there is one), and not at all when the plugin
    already logged the same text (its checks both log and warn)."""
    global _collector
    collector, previous = _Collector(), _collector
    show, plugin_logger, root = warnings.showwarning, logging.getLogger("recbole_genrec"), logging.getLogger()

    def record(message, category, filename, lineno, file=None, line=None):
        if not collector.add(message):
            return
        if root.handlers:
            root.warning(f"{category.__name__}: {message}", extra={"genrec_collected": True})
        else:
            print(f"{category.__name__}: {message}", file=sys.stderr)

    _collector, warnings.showwarning = collector, record
    plugin_logger.addHandler(collector)
    if root.handlers:  # a logger already set up (by RecBole or the caller): collect its records from now on
        root.addHandler(collector)
    try:
        yield collector.messages
    finally:
        warnings.showwarning = show
        plugin_logger.removeHandler(collector)
        root.removeHandler(collector)
        _collector = previous


def warning_summary(messages, limit=200):
    """The lines that repeat ``messages`` after a run ("" when there were none); each cut to ``limit`` characters."""
    if not messages:
        return ""
    lines = [f"{len(messages)} warning{'s' if len(messages) > 1 else ''} in this run:"]
    lines += [f"  - {m if len(m) <= limit else m[:limit - 3] + '...'}" for m in messages]
    return "\n".join(lines)
