"""The embedded default (a CPU demo in minutes) and the tests' fixtures; nothing here is used by a 7B run.

    llm.py                tiny random LLaMA + a SentencePiece tokenizer trained locally
    imagebind.py          the tiny ImageBind preset and its builder
    decoders.py           tiny random SD / ZeroScope / AudioLDM pipelines (tokenizers trained locally)
    models.py             all of them under one folder (`nextgpt tiny OUTDIR`), as configs/tiny/ expect
    synthetic_media.py    coloured shapes, moving shapes and tones with truthful captions
    synthetic_records.py  the reference's JSON records (stage 1/2 pairs, T-T+X, MosIT, LLaVA, Alpaca) over them
    synthetic_data.py     the whole synthetic dataset at the catalog's paths (`nextgpt synthetic OUTDIR`)
    demo.py               the demo's steps: prepare, predict (with the answer check), report (`nextgpt demo`)

This package may import the library; the library never imports it.
"""
