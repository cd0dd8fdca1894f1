/* The sizes, offsets and ioctl numbers of linux/videodev2.h that appliance/v4l2.py mirrors,
 * printed for tests/test_v4l2.py (host) and make test-emulated (armhf). */
#include <stdio.h>
#include <stddef.h>
#include <linux/videodev2.h>
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct v4l2_capability), sizeof(struct v4l2_format),
           sizeof(struct v4l2_requestbuffers), sizeof(struct v4l2_buffer), sizeof(struct v4l2_plane),
           sizeof(struct v4l2_streamparm), sizeof(struct v4l2_pix_format_mplane));
    printf("%zu %zu %zu %zu %zu %zu\n", offsetof(struct v4l2_buffer, timestamp), offsetof(struct v4l2_buffer, sequence),
           offsetof(struct v4l2_buffer, m), offsetof(struct v4l2_buffer, length),
           offsetof(struct v4l2_format, fmt), offsetof(struct v4l2_pix_format_mplane, num_planes));
    printf("%lu %lu %lu %lu %lu %lu %lu %lu\n", (unsigned long)VIDIOC_QUERYCAP, (unsigned long)VIDIOC_S_FMT,
           (unsigned long)VIDIOC_REQBUFS, (unsigned long)VIDIOC_QUERYBUF, (unsigned long)VIDIOC_QBUF,
           (unsigned long)VIDIOC_DQBUF, (unsigned long)VIDIOC_STREAMON, (unsigned long)VIDIOC_S_PARM);
    return 0;
}
