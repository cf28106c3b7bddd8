"""Real fixtures for tests and benches: llama.cpp's vocabularies, test vectors and chat templates,
and small random-weight models of each real family built from them (`families.py`)."""
