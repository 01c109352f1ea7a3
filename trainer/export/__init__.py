"""``cotharness export gguf``: a merged model as one GGUF file that llama.cpp and Ollama run, checked
against the HF model it came from (``pipeline.py`` ties the steps: merge, ``convert``, ``quantize``,
``agreement``, ``modelfile``)."""
