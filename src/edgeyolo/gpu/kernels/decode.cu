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

// ---------------------------------------------------------------------------------------
// NMS of one image's candidates (one block per image), then the letterbox inverse: the CPU
// path's decode_candidates (postprocess/yolo.py + nms.py) operation for operation in float32
// (compiled with --fmad=false), so the detections are bit for bit the CPU path's.
//
// Input: the decode output above (count + records). `params` per image (mapped pinned
// memory the host writes before the launch): pad_x, pad_y, gain_x, gain_y, src_w, src_h.
// Output per image, `out_stride` floats apart:
//     [0] uint32 kept count, [1] uint32 1 = done here, 0 = not done (more than NMS_LIMIT
//     candidates, or an overflow: the host decodes the candidates or the full output),
//     [2-3] unused; [4..] kept records of 6 + nk floats, best first:
//     x1, y1, x2, y2 (source pixels), score, class id, keypoint values (x, y mapped).
#define NMS_LIMIT 1024
#define MAX_WH 7680.0f

__device__ __forceinline__ float np_min(float a, float b) { return (a <= b) ? a : b; }
__device__ __forceinline__ float np_max(float a, float b) { return (a >= b) ? a : b; }

extern "C" __global__ void __launch_bounds__(256) nms_f32(
    const float* __restrict__ cand, long long cand_stride, unsigned int capacity, int nk,
    int kdims, int nc, float iou_thr, int max_det, const float* __restrict__ params,
    float* __restrict__ out, long long out_stride)
{
    __shared__ float s_score[NMS_LIMIT];
    __shared__ float s_anchor[NMS_LIMIT];
    __shared__ float s_x2[NMS_LIMIT], s_y2[NMS_LIMIT], s_nx1[NMS_LIMIT], s_ny1[NMS_LIMIT];
    __shared__ float s_area[NMS_LIMIT];
    __shared__ short s_src[NMS_LIMIT];
    __shared__ unsigned char s_removed[NMS_LIMIT];
    __shared__ short s_keep[NMS_LIMIT];
    __shared__ int s_kept;

    const int b = blockIdx.x;
    const float* img = cand + (size_t)b * cand_stride;
    float* dst = out + (size_t)b * out_stride;
    const unsigned int found = reinterpret_cast<const unsigned int*>(img)[0];
    const int stride = 7 + nk;
    const int tid = threadIdx.x;
    if (found > capacity || found > NMS_LIMIT) {
        if (tid == 0) {
            reinterpret_cast<unsigned int*>(dst)[0] = 0u;
            reinterpret_cast<unsigned int*>(dst)[1] = 0u;
        }
        return;
    }
    const int n = (int)found;
    for (int i = tid; i < n; i += blockDim.x) {
        s_score[i] = img[4 + (size_t)i * stride + 2];
        s_anchor[i] = img[4 + (size_t)i * stride + 0];
        s_removed[i] = 0;
    }
    __syncthreads();
    // Score order, ties by anchor index: numpy's stable argsort of -score over candidates in
    // anchor order. rank = how many come before.
    for (int i = tid; i < n; i += blockDim.x) {
        const float si = s_score[i];
        const float ai = s_anchor[i];
        int rank = 0;
        for (int j = 0; j < n; ++j) {
            const float sj = s_score[j];
            rank += (sj > si || (sj == si && s_anchor[j] < ai)) ? 1 : 0;
        }
        const float* rec = img + 4 + (size_t)i * stride;
        const float cx = rec[3], cy = rec[4], w = rec[5], h = rec[6];
        float x1 = cx + w * -0.5f, y1 = cy + h * -0.5f, x2 = cx + w * 0.5f, y2 = cy + h * 0.5f;
        if (nc != 1) {  // class-aware: each class shifted far apart (the CPU path's offsets)
            const float off = rec[1] * MAX_WH;
            x1 = x1 + off;
            y1 = y1 + off;
            x2 = x2 + off;
            y2 = y2 + off;
        }
        const float nx1 = -x1, ny1 = -y1;
        s_x2[rank] = x2;
        s_y2[rank] = y2;
        s_nx1[rank] = nx1;
        s_ny1[rank] = ny1;
        s_area[rank] = (x2 + nx1) * (y2 + ny1);
        s_src[rank] = (short)i;
    }
    if (tid == 0) {
        s_kept = 0;
    }
    __syncthreads();
    // Greedy: every thread walks the boxes in order; a kept one clears, in parallel, what it
    // suppresses (IoU strictly above the threshold), then all wait for each other.
    int kept = 0;
    for (int p = 0; p < n; ++p) {
        if (s_removed[p]) {
            continue;
        }
        if (tid == 0) {
            s_keep[kept] = (short)p;
        }
        ++kept;
        if (kept >= max_det) {
            break;
        }
        const float px2 = s_x2[p], py2 = s_y2[p], pnx1 = s_nx1[p], pny1 = s_ny1[p];
        const float pa = s_area[p];
        for (int q = p + 1 + tid; q < n; q += blockDim.x) {
            float w = np_min(px2, s_x2[q]) + np_min(pnx1, s_nx1[q]);
            float h = np_min(py2, s_y2[q]) + np_min(pny1, s_ny1[q]);
            w = np_max(w, 0.0f);
            h = np_max(h, 0.0f);
            const float inter = w * h;
            const float uni = (pa + s_area[q]) - inter;
            const float iou = inter / uni;
            if (iou > iou_thr) {
                s_removed[q] = 1;
            }
        }
        __syncthreads();
    }
    if (tid == 0) {
        s_kept = kept;
    }
    __syncthreads();
    kept = s_kept;
    const float* prm = params + (size_t)b * 8;
    const float pad_x = prm[0], pad_y = prm[1], gain_x = prm[2], gain_y = prm[3];
    const float src_w = prm[4], src_h = prm[5];
    const int ostride = 6 + nk;
    for (int t = tid; t < kept; t += blockDim.x) {
        const int i = s_src[s_keep[t]];
        const float* rec = img + 4 + (size_t)i * stride;
        const float cx = rec[3], cy = rec[4], w = rec[5], h = rec[6];
        const float xy[4] = {cx + w * -0.5f, cy + h * -0.5f, cx + w * 0.5f, cy + h * 0.5f};
        float* o = dst + 4 + (size_t)t * ostride;
        for (int c = 0; c < 4; ++c) {
            const bool is_x = (c % 2) == 0;
            float v = (xy[c] - (is_x ? pad_x : pad_y)) / (is_x ? gain_x : gain_y);
            v = np_max(v, 0.0f);
            o[c] = np_min(v, is_x ? src_w : src_h);
        }
        o[4] = rec[2];
        o[5] = rec[1];
        for (int k = 0; k < nk; ++k) {
            const int d = k % kdims;
            float v = rec[7 + k];
            if (d < 2) {
                v = (v - (d == 0 ? pad_x : pad_y)) / (d == 0 ? gain_x : gain_y);
                v = np_max(v, 0.0f);
                v = np_min(v, d == 0 ? src_w : src_h);
            }
            o[6 + k] = v;
        }
    }
    if (tid == 0) {
        reinterpret_cast<unsigned int*>(dst)[0] = (unsigned int)kept;
        reinterpret_cast<unsigned int*>(dst)[1] = 1u;
    }
}
