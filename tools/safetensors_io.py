"""safetensors files read and written by hand for PyTorch (struct + json + raw bytes, not the
`safetensors` package, which Debian lacks): the PyTorch side of kiln's interop tests and of
tools/gpt_vs_torch.py. read_safetensors also checks the layout rules kiln's writer promises
(names in order, offsets that tile the data, a CRC32 of every tensor in the metadata)."""
import json
import struct
import zlib

import torch

DTYPES = {  # safetensors name <-> torch dtype
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool,
}
NAME_OF = {v: k for k, v in DTYPES.items()}
CRC_PREFIX = "kiln.crc32."  # kiln's per-tensor checksums in the metadata (core/safetensors.h)


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: take the same bits as int16
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata, hf_order, separators):
    """The format by hand. hf_order: sort like HF's writer (wider dtypes first, then name)."""
    names = sorted(tensors)
    if hf_order:
        names.sort(key=lambda n: (-tensors[n].element_size(), n))
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for n in names:
        b = tensor_bytes(tensors[n])
        header[n] = {"dtype": NAME_OF[tensors[n].dtype], "shape": list(tensors[n].shape),
                     "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=separators).encode("utf-8")  # ensure_ascii: \uXXXX escapes
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Reads the format by hand, checking the layout rules kiln's writer promises."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and 8 + n <= len(data), f"header length {n}"
    text = data[8:8 + n].decode("utf-8")
    assert text.startswith("{") and text.rstrip(" ").endswith("}"), "JSON padded with spaces"
    header = json.loads(text)
    metadata = header.pop("__metadata__", None)
    body = data[8 + n:]
    out, spans = {}, []
    for name, info in header.items():
        assert set(info) == {"dtype", "shape", "data_offsets"}, info
        begin, end = info["data_offsets"]
        spans.append((begin, end))
        dtype, shape = DTYPES[info["dtype"]], info["shape"]
        if begin == end:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype).reshape(shape)
    at = 0
    for begin, end in sorted(spans):
        assert begin == at, f"offsets do not tile the data: {sorted(spans)}"
        at = end
    assert at == len(body), f"data section {len(body)} bytes, tensors cover {at}"
    assert list(header) == sorted(header, key=lambda s: s.encode("utf-8")), "kiln writes names in order"
    # kiln stores "kiln.crc32.<name>" = zlib's CRC32 of each tensor's bytes, 8 lowercase hex
    # digits; check them all and hand back only the user's metadata.
    metadata = metadata or {}
    crcs = {k[len(CRC_PREFIX):]: v for k, v in metadata.items() if k.startswith(CRC_PREFIX)}
    assert set(crcs) == set(header), f"kiln writes a CRC32 for every tensor: {sorted(crcs)}"
    for name, crc in crcs.items():
        begin, end = header[name]["data_offsets"]
        assert crc == f"{zlib.crc32(body[begin:end]):08x}", f"CRC32 of {name!r}: {crc}"
    metadata = {k: v for k, v in metadata.items() if not k.startswith(CRC_PREFIX)} or None
    return out, metadata
