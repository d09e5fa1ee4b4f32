"""Training-time support code for recipec-generated training scripts.

This package is copied verbatim into every build directory as
``recipec_runtime`` and imported by the generated ``train.py``. It therefore
uses relative imports only and depends on nothing outside the standard library
and the training stack (torch, datasets, transformers, tokenizers).

This ``__init__`` deliberately imports nothing: the compiler imports
``schedule``, ``checkpoint``, ``stage_request``, ``formats`` and ``summary`` (which are stdlib-only) and must
never pull in torch. Import the submodules you need explicitly.
"""
