"""Personal data in citizen requests: detection (`find_pii`), masking actions as plug-ins (`maskers`), and
masking policies as data (`MaskingPolicy`, `DEFAULT_POLICY`) applied by `mask_text` and `mask_record`."""

from citybrain.hotline.pii.detect import (
    KINDS,
    SURNAMES,
    PiiKind,
    PiiSpan,
    find_pii,
    luhn_valid,
    valid_id_card,
)
from citybrain.hotline.pii.maskers import MaskContext, Masker, MaskerManifest, maskers, pii_hash
from citybrain.hotline.pii.policy import (
    DEFAULT_POLICY,
    ROLES,
    MaskingPolicy,
    apply_masks,
    default_policy,
    hash_key,
    mask_record,
    mask_text,
)

__all__ = [
    "DEFAULT_POLICY", "KINDS", "ROLES", "SURNAMES", "MaskContext", "Masker", "MaskerManifest", "MaskingPolicy",
    "PiiKind", "PiiSpan", "apply_masks", "default_policy", "find_pii", "hash_key", "luhn_valid", "mask_record",
    "mask_text", "maskers", "pii_hash", "valid_id_card",
]
