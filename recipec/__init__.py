"""recipec: a declarative training-recipe compiler and runner.

The pipeline runs in one direction::

    read        -> validate  -> resolve   -> render        -> write         -> launch
    TOML text      Recipe       Plan         {path: text}     build/<name>/    accelerate launch
    + SourceMap    (pydantic)   (frozen)     (jinja2)         + lock file      (subprocess)

* ``read`` (`recipec.source`) parses the TOML, applies ``--set`` overrides and keeps a
  source map so every later error can point at a file, line and column.
* ``validate`` (`recipec.validate`) turns the dict into a `recipec.schema.Recipe`,
  collecting every error at once. What the recipe names on disk is read beside it: local
  paths and data globs must find something (`recipec.local_files`), a continual recipe's
  parent run is read (`recipec.parent`).
* ``resolve`` (`recipec.resolve`) checks what spans tables and derives every number the
  script needs (gradient accumulation, steps, warmup), each with a note saying how: an
  ordered list of steps, one module per concern.
* ``render`` (`recipec.render`) fills the jinja2 templates; every value passes through one
  filter that emits a Python literal.
* ``write`` (`recipec.build`) writes the build directory and its lock file, and copies the
  torch-light runtime (`recipec.runtime`) into it so the build runs without recipec.
* ``launch`` (`recipec.launch`) runs ``accelerate launch`` on the build.

validate, resolve and render are pure: no disk, no network, no torch. The compiler never
imports torch; only the generated script and the runtime it ships do.
"""

__version__ = "0.1.0"
