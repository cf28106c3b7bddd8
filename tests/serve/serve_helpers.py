"""Request pieces shared by the serve/collect tests and their meaning."""

# iceburg-tiny's special tokens (iceburg.models.tiny.SPECIAL_TOKENS order): <|endoftext|> 0, <|im_end|> 2.
# Banning them makes an answer run to its token budget: a stream that lasts long enough to be killed.
NO_EOS = {"0": -100.0, "2": -100.0}
# A function whose argument is an enum: llama-cpp-python's grammar for tool_choice then always
# closes the JSON within a few tokens, so the tiny model's forced call is a valid, parseable one.
TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "Search the literature",
    "parameters": {"type": "object", "properties": {"topic": {"type": "string", "enum": ["sleep", "memory"]}},
                   "required": ["topic"]}}}]
FORCE_SEARCH = {"type": "function", "function": {"name": "search"}}
