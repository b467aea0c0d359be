// Decode a YOLO output on the GPU: per anchor the best class score, keep anchors above the
// confidence threshold (and in the class filter), compact them with an atomic counter.
//
// Input: batch x rows x anchors, rows = 4 box (cx, cy, w, h) + nc class scores + nk keypoint
// values, FP32 or FP16. Output per batch image, `batch_stride` floats apart:
//     [0]   uint32 count of candidates found (may exceed capacity: overflow)
//     [1-3] unused (16-byte alignment of the records)
//     [4..] capacity records of `stride` = 7 + nk floats:
//           anchor index, class id, score, cx, cy, w, h, keypoint values...
// The count must be zeroed before the launch (cuMemsetD32Async on the same stream).
// Records land in arbitrary order; the host sorts them by anchor index, which restores the
// CPU path's order (numpy's flatnonzero), so NMS sees identical input.
// Scores are compared as the CPU path does: best > conf in float32; the best class is the
// first maximum (numpy's argmax).

__device__ __forceinline__ float load_value(const float* p) { return *p; }

__device__ __forceinline__ float load_value(const unsigned short* p)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));
    return f;
}

template <typename T>
__device__ __forceinline__ void decode_anchor(
    const T* __restrict__ raw, int anchors, int nc, int nk, float conf,
    const unsigned char* __restrict__ class_mask, float* __restrict__ out, unsigned int capacity,
    long long batch_stride)
{
    const int a = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (a >= anchors) {
        return;
    }
    const int rows = 4 + nc + nk;
    const T* col = raw + (size_t)b * rows * anchors + a;
    float best = load_value(col + (size_t)4 * anchors);
    int cls = 0;
    for (int c = 1; c < nc; ++c) {
        const float v = load_value(col + (size_t)(4 + c) * anchors);
        if (v > best) {
            best = v;
            cls = c;
        }
    }
    if (!(best > conf)) {
        return;
    }
    if (class_mask != nullptr && class_mask[cls] == 0) {
        return;
    }
    float* img = out + (size_t)b * batch_stride;
    const unsigned int i = atomicAdd(reinterpret_cast<unsigned int*>(img), 1u);
    if (i >= capacity) {
        return;  // overflow: counted, not stored (the host falls back to the full output)
    }
    float* rec = img + 4 + (size_t)i * (7 + nk);
    rec[0] = (float)a;
    rec[1] = (float)cls;
    rec[2] = best;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        rec[3 + r] = load_value(col + (size_t)r * anchors);
    }
    for (int k = 0; k < nk; ++k) {
        rec[7 + k] = load_value(col + (size_t)(4 + nc + k) * anchors);
    }
}

extern "C" __global__ void decode_f32(
    const float* raw, int anchors, int nc, int nk, float conf, const unsigned char* class_mask,
    float* out, unsigned int capacity, long long batch_stride)
{
    decode_anchor<float>(raw, anchors, nc, nk, conf, class_mask, out, capacity, batch_stride);
}

extern "C" __global__ void decode_f16(
    const unsigned short* raw, int anchors, int nc, int nk, float conf,
    const unsigned char* class_mask, float* out, unsigned int capacity, long long batch_stride)
{
    decode_anchor<unsigned short>(raw, anchors, nc, nk, conf, class_mask, out, capacity,
                                  batch_stride);
}
