"""Precompute caption embeddings with a decoder's own text encoder (logic: nextgpt/dataset/embeddings.py).

    python preprocess_embeddings.py --data data/T_X_pair_data/cc3m/cc3m_generation.json --modality image \
        --decoder pretrain_ckpt/stable-diffusion-2 --output-dir data/embed [--batch-size 128]

Writes `<embedding name>.npy` (float16; image/video (77, D), audio (D,)) for every caption of the file that is not
there yet.
"""
import sys

from nextgpt.dataset.embeddings import main

if __name__ == "__main__":
    sys.exit(main())
