# A GPU image for training and generation: CUDA PyTorch base, the project's own requirements, the `nextgpt` command.
#
#   docker build -t nextgpt .
#   docker run --gpus all --ipc=host -v $PWD/pretrain_ckpt:/work/pretrain_ckpt -v $PWD/data:/work/data \
#       -v $PWD/checkpoints:/work/checkpoints nextgpt nextgpt check --config configs/stage_1.yaml
#
# The base ships torch 2.11 built for CUDA 13.0 (the version requirements.txt pins); requirements.txt installs
# everything else at the tested versions (torch is already satisfied and is not replaced). Weights and data are
# mounted, not baked in: `nextgpt download --config ...` inside the container fetches the weights into the mount.
FROM pytorch/pytorch:2.11.0-cuda13.0-cudnn9-devel

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/work/.cache/huggingface \
    TORCH_EXTENSIONS_DIR=/work/.cache/torch_extensions

# ffmpeg / libsndfile: video and audio decoding (decord, av, soundfile); git: hub downloads of some repositories
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libsndfile1 git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /work
COPY requirements.txt .
RUN python -m pip install -r requirements.txt
COPY . /opt/nextgpt
RUN python -m pip install --no-deps --no-build-isolation /opt/nextgpt \
 && cp -r /opt/nextgpt/configs /opt/nextgpt/scripts /opt/nextgpt/*.py /work/

# DeepSpeed compiles its CUDA ops on first use (cached in TORCH_EXTENSIONS_DIR); the devel base has nvcc for that.
CMD ["nextgpt", "--help"]
