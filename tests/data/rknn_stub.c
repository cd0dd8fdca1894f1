/* A stand-in for Rockchip's NPU runtime, for testing FaceGate's ctypes runner on a host.
 *
 * It follows rknn_api.h's ABI: RKNPU1's (librknn_api.so) by default, RKNPU2's (librknnrt.so)
 * with -DRKNPU2. No NPU is involved: a "model" is a text header "FGSTUB <height> <width>
 * <outputs> <length>", and output k holds <length> floats, element i being the mean of input
 * channel i % 3 plus k, so a test can see that pixels, shapes and outputs crossed intact.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __arm__
typedef uint32_t rknn_context;
#else
typedef uint64_t rknn_context;
#endif

typedef struct {
    uint32_t index, n_dims, dims[16];
    char name[256];
    uint32_t n_elems, size;
    int fmt, type, qnt_type;
    int8_t fl;
#ifdef RKNPU2
    int32_t zp;
    float scale;
    uint32_t w_stride, size_with_stride;
    uint8_t pass_through;
    uint32_t h_stride;
#else
    uint32_t zp;
    float scale;
#endif
} attr_t;

typedef struct { uint32_t index; void *buf; uint32_t size; uint8_t pass_through; int type, fmt; } input_t;
typedef struct { uint8_t want_float, is_prealloc; uint32_t index; void *buf; uint32_t size; } output_t;

static struct { int height, width, outputs, length; double means[3]; int has_input; } model;

#ifdef RKNPU2
int rknn_init(rknn_context *context, void *data, uint32_t size, uint32_t flag, void *extend)
#else
int rknn_init(rknn_context *context, void *data, uint32_t size, uint32_t flag)
#endif
{
    char header[64] = {0};
    memcpy(header, data, size < 63 ? size : 63);
    if (getenv("RKNN_STUB_NO_DEVICE")) return -3;
    if (sscanf(header, "FGSTUB %d %d %d %d", &model.height, &model.width, &model.outputs, &model.length) != 4)
        return -6;
    *context = 7;
    return 0;
}

int rknn_destroy(rknn_context context) { return context == 7 ? 0 : -7; }

#ifdef RKNPU2
/* exported by RKNPU2's runtime alone: how the runner tells the generations apart */
void *rknn_create_mem(rknn_context context, uint32_t size) { return NULL; }
#endif

int rknn_query(rknn_context context, int command, void *info, uint32_t size)
{
    if (context != 7) return -7;
    if (command == 0) {
        uint32_t *counts = info;
        counts[0] = 1;
        counts[1] = model.outputs;
        return 0;
    }
    if (size != sizeof(attr_t)) return -5; /* the caller's struct is not this runtime's */
    attr_t *attr = info;
    if (command == 1) {
        uint32_t dims[4] = {1, model.height, model.width, 3};
        attr->n_dims = 4;
        for (int i = 0; i < 4; i++) attr->dims[i] = dims[i];
        strcpy(attr->name, "input");
        return 0;
    }
    if (command == 2 && attr->index < (uint32_t)model.outputs) {
#ifdef RKNPU2
        uint32_t dims[2] = {1, model.length}; /* outermost first */
#else
        uint32_t dims[2] = {model.length, 1}; /* innermost first */
#endif
        attr->n_dims = 2;
        attr->dims[0] = dims[0];
        attr->dims[1] = dims[1];
        attr->n_elems = model.length;
        attr->size = model.length * 4;
        snprintf(attr->name, sizeof attr->name, "output%u", attr->index);
        return 0;
    }
    return -5;
}

int rknn_inputs_set(rknn_context context, uint32_t count, input_t inputs[])
{
    if (context != 7) return -7;
    if (count != 1 || inputs[0].type != 3 || inputs[0].fmt != 1) return -8;
    if (inputs[0].size != (uint32_t)(model.height * model.width * 3)) return -8;
    const uint8_t *pixels = inputs[0].buf;
    double sums[3] = {0, 0, 0};
    for (uint32_t i = 0; i < inputs[0].size; i++) sums[i % 3] += pixels[i];
    for (int c = 0; c < 3; c++) model.means[c] = sums[c] / (model.height * model.width);
    model.has_input = 1;
    return 0;
}

int rknn_run(rknn_context context, void *extend) { return context != 7 ? -7 : model.has_input ? 0 : -8; }

int rknn_outputs_get(rknn_context context, uint32_t count, output_t outputs[], void *extend)
{
    if (context != 7) return -7;
    for (uint32_t k = 0; k < count; k++) {
        if (!outputs[k].want_float) return -9;
        float *values = malloc(model.length * sizeof(float));
        for (int i = 0; i < model.length; i++) values[i] = (float)(model.means[i % 3] + outputs[k].index);
        outputs[k].buf = values;
        outputs[k].size = model.length * sizeof(float);
    }
    return 0;
}

int rknn_outputs_release(rknn_context context, uint32_t count, output_t outputs[])
{
    for (uint32_t k = 0; k < count; k++) {
        free(outputs[k].buf);
        outputs[k].buf = NULL;
    }
    return 0;
}
