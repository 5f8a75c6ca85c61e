"""Varied-length sentences (one token to ~40, non-ASCII, code) for the MiniLM parity test;
batched together they exercise padding."""

SENTENCES = [
    "x",
    "Hello world.",
    "Return the number of items in a container; raise TypeError if it is not sized.",
    "def add(a, b):\n    return a + b  # the sum of two numbers",
    "Ünïcödé, ça va? 東京の天気は晴れです。",
    "The quick brown fox jumps over the lazy dog, again and again, while the sentence keeps "
    "growing so that this example is padded least and every other one is padded more.",
]
