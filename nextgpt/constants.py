"""Fixed ids and names shared by the tokenizer, the dataset and the model."""
from __future__ import annotations

IGNORE_INDEX = -100

# Input-side placeholders: one negative id per media item in the token sequence, replaced by the
# projected encoder features in the splice.
IMAGE_TOKEN_INDEX = -200
VIDEO_TOKEN_INDEX = -300
AUDIO_TOKEN_INDEX = -400

DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_VIDEO_TOKEN = "<video>"
DEFAULT_AUDIO_TOKEN = "<audio>"

MODALITIES = ("image", "video", "audio")

PLACEHOLDER_TOKEN = {"image": DEFAULT_IMAGE_TOKEN, "video": DEFAULT_VIDEO_TOKEN, "audio": DEFAULT_AUDIO_TOKEN}
PLACEHOLDER_ID = {"image": IMAGE_TOKEN_INDEX, "video": VIDEO_TOKEN_INDEX, "audio": AUDIO_TOKEN_INDEX}
PLACEHOLDER_MODALITY = {v: k for k, v in PLACEHOLDER_ID.items()}

# The reference caps media per sample (order_pick_k) and placeholder runs (MAX_*_LENGTH).
MAX_MEDIA_PER_SAMPLE = 8
MAX_IMAGE_LENGTH = MAX_VIDEO_LENGTH = MAX_AUDIO_LENGTH = 16

# Signal tokens. NEW: "<image_00>"... with one separator token between consecutive signals (span 2n-1).
# LEGACY (7b_tiva_v0): "[IMG0]"... contiguous (span n), plus "<Img>" / "</Img>" around input media.
NEW_SIGNAL_FORMAT = {"image": "<image_{:02d}>", "video": "<video_{:02d}>", "audio": "<audio_{:02d}>"}
LEGACY_SIGNAL_FORMAT = {"image": "[IMG{}]", "video": "[VID{}]", "audio": "[AUD{}]"}
LEGACY_MEDIA_START, LEGACY_MEDIA_END = "<Img>", "</Img>"

# Reference signal-token counts (n_img / n_vid / n_aud).
DEFAULT_SIGNAL_COUNTS = {"image": 4, "video": 24, "audio": 8}
