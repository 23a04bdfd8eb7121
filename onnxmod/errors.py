"""One error hierarchy for everything onnxmod refuses to do.

Every message is one line that names the file, the node/op or the data field and what is wrong.
The CLI prints ``onnxmod: error: <message>`` and exits with the class's ``exit_code``:

==========================  ====  ==========================================================
class                       code  meaning
==========================  ====  ==========================================================
``UsageError``              2     the command line or API call itself is wrong
``InputError``              3     a file or data set is missing, unreadable or malformed
``UnsupportedModelError``   4     a valid model uses something onnxmod cannot decompose (yet)
``IncompatibleError``       5     modules/models that cannot be combined as asked
``OutputError``             73    an output cannot be created (no permission, not a directory,
                                  disk full); nothing partial was left behind
``Interrupted``             130   SIGINT/SIGTERM; nothing partial was left behind
(``BrokenPipeError``)       141   stdout's reader went away (``| head``); nothing printed
(any other exception)       70    an internal error (a bug): please report it
==========================  ====  ==========================================================

70 and 73 are ``EX_SOFTWARE`` and ``EX_CANTCREAT`` of ``sysexits.h``. ``Interrupted`` derives from
``KeyboardInterrupt``, not ``Exception``: no ``except Exception`` on the way (a loader that turns
any parse failure into ``InputError``, say) can swallow an interruption or change its exit code,
while the atomic writers, which clean up on ``BaseException``, still do.
"""
from __future__ import annotations

EXIT_INTERNAL = 70
EXIT_PIPE = 141  # stdout closed by its reader (`| head`): 128 + SIGPIPE, as a Unix tool killed by it


class OnnxmodError(Exception):
    """Base class: a refusal with a one-line, user-facing message."""

    exit_code = 1

    def __init__(self, message: str):
        # One line, always: collapse any newline a nested library put in.
        super().__init__(" ".join(str(message).split()))


class UsageError(OnnxmodError):
    exit_code = 2


class InputError(OnnxmodError):
    exit_code = 3


class UnsupportedModelError(OnnxmodError):
    exit_code = 4


class IncompatibleError(OnnxmodError):
    exit_code = 5


class OutputError(OnnxmodError):
    exit_code = 73


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM (a ``BaseException``, see above), with the same one-line message contract."""

    exit_code = 130

    def __init__(self, message: str = "interrupted"):
        super().__init__(" ".join(str(message).split()))
