"""The data layer: what a stored ECG record is and how records get there.

| module | what |
|---|---|
| `schema` | lead names and order, the 500 Hz / 10 s contract, the TFDS feature schema, metadata |
| `signal` | `resample` (one polyphase resampler for readers, builders and the input pipeline) |
| `wfdb_header` | WFDB headers (`read_header`: a fast parser for plain headers, else `wfdb`) |
| `wfdb_io` | WFDB headers and signals -> the schema (`read_wfdb`), `quantise` |
| `windows` | stored windows (`cut_windows`) and the builders' loading helpers |
| `parsing` | header comments, `parse_age`, `parse_sex` (the one sex parser) |
| `dx` | SNOMED CT Dx codes and the Challenge's abbreviation table |
| `built` | `resolve_dataset`: a built dataset's newest version directory |

Submodules are imported explicitly (`from clef_jax.data import schema`); none imports TFDS or
JAX at import time.
"""
