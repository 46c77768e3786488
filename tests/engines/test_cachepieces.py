"""marker's missing cache pieces in one short line for a task's stop record (issue 19: not ~900 characters)."""

from hpc_marker.engines.cachepieces import describe_missing, is_cache_piece

MARKER_2_EMPTY = [  # what missing_cache_pieces() says on a node with nothing (marker-pdf 2.0.0, --inference-server off)
    "font /home/a/.cache/fonts/GoNotoCurrent-Regular.ttf",
    "Hugging Face model datalab-to/surya_layout2 (HF cache /home/a/.cache/huggingface/hub)",
    "Hugging Face model datalab-to/surya_layout2/order (HF cache /home/a/.cache/huggingface/hub)",
    "model s3://ocr_error_detection/2025_02_18 (/home/a/.cache/datalab/models/ocr_error_detection/2025_02_18/"
    "manifest.json)",
    "llama-server binary (llamacpp backend; or set SURYA_INFERENCE_URL)",
    "Hugging Face model datalab-to/surya-ocr-2-gguf/surya-2.gguf (HF cache /home/a/.cache/huggingface/hub)",
    "Hugging Face model datalab-to/surya-ocr-2-gguf/surya-2-mmproj.gguf (HF cache /home/a/.cache/huggingface/hub)",
]


def test_missing_pieces_are_named_by_kind_in_one_short_line():
    assert describe_missing(MARKER_2_EMPTY) == (
        "font GoNotoCurrent-Regular.ttf; models surya_layout2, surya_layout2/order, ocr_error_detection; "
        "GGUF files surya-2.gguf, surya-2-mmproj.gguf; "
        "llama-server binary (llamacpp backend; or set SURYA_INFERENCE_URL)"
    )
    assert [is_cache_piece(p) for p in MARKER_2_EMPTY].count(False) == 1
    assert describe_missing(["model s3://layout/2025_09_23 (/m/layout/2025_09_23/manifest.json)"]) == "model layout"
