"""copytrace.app.threatexchange: copytrace as a python-threatexchange extension (the optional
extra `copytrace[threatexchange]`), so HMA / OpenMediaMatch and the `threatexchange` CLI can
hash and match with copytrace's learned descriptor, and read PDQ banks out of a catalog.

    threatexchange config extensions add copytrace.app.threatexchange.extension
    copytrace tx bank --index idx/ --out bank.txt          # the catalog as a hash bank

Modules:
    codec.py      The descriptor as a signal string (model key + base64 of float16) and back
                  [tests: test_threatexchange.py]
    hasher.py     Hash an image with the descriptor; the match threshold from the calibration
                  [tests: test_threatexchange.py]
    bank.py       A catalog's descriptors and PDQ hashes as a bank file [tests: test_threatexchange.py]
    extension.py  TX_MANIFEST: the `copytrace` signal type and its index (imports threatexchange)
                  [tests: test_threatexchange.py]
    cli.py        `copytrace tx bank` (a `copytrace.commands` plug-in; imports nothing heavy)

Only extension.py needs the threatexchange package; the rest is plain copytrace.

The names below are the public API; each is imported on first use (nothing heavy at
import time). Modules and names starting with `_` are private to this package.
"""

from copytrace.util import lazy_api

_EXPORTS = {
    "BankSignal": "bank",
    "DescriptorHasher": "hasher",
    "SIGNAL_NAME": "codec",
    "decode_hash": "codec",
    "encode_vector": "codec",
    "match_threshold": "hasher",
    "write_bank": "bank",
}

__all__, __getattr__, __dir__ = lazy_api(__name__, _EXPORTS)
