"""The parse worker process: ``python -m tidings_email_imap.parse_worker``.

It reads pickled ``(account_id, items)`` requests from stdin and answers each with the
pickled ``read_items`` result on stdout (sources left out: the parent has them), in
order, until stdin closes. Only the parent that started it writes to it
(``channel._ParseWorker``), so pickle is safe here. A fresh
interpreter importing only the parser (not ``multiprocessing``'s re-import of the
parent's ``__main__``) keeps it small and free of side effects.
"""

from __future__ import annotations

import os
import pickle
import sys


def serve() -> None:
    # Answers go to a private copy of stdout; anything printed goes to stderr instead of
    # corrupting the stream of answers.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    from tidings_email_imap.parse import read_items

    while True:
        try:
            account_id, items = pickle.load(requests)  # noqa: S301 (only our parent writes)
        except EOFError:
            return
        # Without their sources: the parent holds those bytes and puts them back
        # (``_ParseWorker._round_trip``).
        messages = [m.model_copy(update={"source": b""}) for m in read_items(account_id, items)]
        pickle.dump(messages, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


if __name__ == "__main__":
    serve()
