"""Deprecated location: the IAP demo moved to :mod:`mridomain.iap.demo`; this name answers for one release."""
from mridomain.iap.demo import *  # noqa: F401,F403
from mridomain.iap.demo import __all__  # noqa: F401
