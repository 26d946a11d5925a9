"""The package's own error base class.

Every error ``pynq_nbq`` (and ``host_train``'s exporter) raises on purpose - a
bundle that fails validation, a kernel that refuses a call, a csim library that
cannot be built, an export the datapath cannot express, an unusable image -
derives from :class:`NbqError`.  The CLI and the server catch ``NbqError`` and
report its message (one line, naming the cause); anything else that escapes is a
bug, not bad input.

The subclasses live next to the code that raises them:

==================================================  ===========================================
class                                               raised when
==================================================  ===========================================
``pynq_nbq.bundle.BundleError``                     a bundle fails validation (names the field)
``pynq_nbq.kernel.protocol.KernelError``            the conv kernel refuses or breaks a call
``pynq_nbq.kernel.protocol.DeviceError``            the board's DMA or kernel failed a call
``pynq_nbq.backends.csim.CsimError``                the csim library cannot be built or loaded
``pynq_nbq.native.NativeError``                     the native kernel cannot be built or loaded
``pynq_nbq.preprocess.ImageError``                  the input is not a usable image
``pynq_nbq.safe_files.UnsafeFile``                  a file is not a bounded regular file
``host_train.export.ExportError``                   a model has no datapath form
``host_train.checkpoint.CheckpointError``           a checkpoint file is corrupt or refused
``pynq_nbq.interop.qonnx_export.QonnxExportError``  a bundle cannot be written as QONNX
``pynq_nbq.interop.qonnx_import.QonnxImportError``  a QONNX graph has what the datapath lacks
==================================================  ===========================================
"""

from __future__ import annotations


class NbqError(Exception):
    """Base class of the errors pynq_nbq raises on purpose; the message names the cause."""
