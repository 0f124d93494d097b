"""LLM commentary on a run: a bounded prompt, one Messages API call, numbers checked.

``generate_commentary`` turns a run's ``training_results.json`` dict, its diagnosis and its
metric-CSV statistics into ``llm_analysis.md``. One module per concern:

- ``redact``: secrets never reach the prompt (secret-named values at any depth, strings that
  look like an Anthropic key, the key in use) - they become ``[redacted]``.
- ``numbers``: every number stated in a text (``extract_numbers``), and the answer's numbers
  checked against the input's (``verify_numbers``); the ones not found are marked
  ``[unverified]`` in the file and listed at its end.
- ``blocks`` and ``prompt``: the prompt (``build_prompt``), bounded by ``max_chars``: key
  metrics first, then the diagnosis, the configuration, the per-epoch history and the CSV
  statistics; what was shortened is said in the prompt.
- ``call``: the one API call through the ``anthropic`` SDK and its failure messages;
  ``generate_commentary`` never raises.
- ``render``: the Markdown file. ``prices`` (with the table in ``prices.toml``): the cost.

The API key is only handed to the SDK, which sends it in the request's auth header; it is
never written to the prompt, the file, the returned record, messages or logs.
"""

from .call import ANALYSIS_NAME, DEFAULT_MODEL, Commentary, CommentaryStatus, generate_commentary
from .numbers import NumberMention, UnverifiedNumber, extract_numbers, verify_numbers
from .prices import estimate_cost_usd, model_price
from .prompt import MIN_PROMPT_CHARS, SECTIONS, LLMError, Prompt, build_prompt
from .redact import REDACTED, scrub_secrets
from .render import UNVERIFIED_MARK

__all__ = [
    "ANALYSIS_NAME",
    "DEFAULT_MODEL",
    "MIN_PROMPT_CHARS",
    "REDACTED",
    "SECTIONS",
    "UNVERIFIED_MARK",
    "Commentary",
    "CommentaryStatus",
    "LLMError",
    "NumberMention",
    "Prompt",
    "UnverifiedNumber",
    "build_prompt",
    "estimate_cost_usd",
    "extract_numbers",
    "generate_commentary",
    "model_price",
    "scrub_secrets",
    "verify_numbers",
]
