"""Local .tar.gz modules for tensorflow_hub (no TensorFlow model code imported).

TF-Hub's compressed format is a tar.gz of the module directory's contents
(`pack_tar_gz` writes one). hub.load
and hub.KerasLayer read it natively from http(s):// and gs:// handles, unpacking it
into $TFHUB_CACHE_DIR; a local file path, however, goes to hub's path resolver,
which expects a directory. Two ways to use a local archive:

    from hub_export import tarball
    module_dir = tarball.unpack("/models/r50_1x.tar.gz")   # -> a directory
    hub.KerasLayer(module_dir)

    tarball.register_local_resolver()                     # once per process
    hub.KerasLayer("/models/r50_1x.tar.gz", trainable=True)

Both unpack into $TFHUB_CACHE_DIR (default: <tmp>/tfhub_modules), keyed by the
archive's path, size and modification time, so a changed archive is unpacked again.
"""

import hashlib
import os
import shutil
import tarfile
import tempfile

from tf_simclr.errors import ExportError

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _is_local_tarball(handle):
    return (isinstance(handle, str) and "://" not in handle
            and handle.endswith(TAR_SUFFIXES) and os.path.isfile(handle))


def _cache_key(path):
    stat = os.stat(path)
    text = f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _safe_members(archive, destination):
    root = os.path.realpath(destination)
    for member in archive.getmembers():
        target = os.path.realpath(os.path.join(destination, member.name))
        if not (target == root or target.startswith(root + os.sep)) or member.issym() \
                or member.islnk() or member.isdev():
            raise ValueError(f"{archive.name}: member {member.name!r} is not a plain file "
                             "or directory inside the module; refusing to unpack it.")
        yield member


def unpack(tar_path, destination=None):
    """Unpacks a module archive into `destination` (default: a cache directory next
    to hub's, keyed by the archive) and returns the module directory. Atomic: the
    directory appears only once complete."""
    if not _is_local_tarball(tar_path):
        raise ValueError(f"{tar_path} is not a local module archive "
                         f"({', '.join(TAR_SUFFIXES)}).")
    if destination is None:
        cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(
            tempfile.gettempdir(), "tfhub_modules")
        destination = os.path.join(cache, "local_" + _cache_key(tar_path))
        if os.path.isfile(os.path.join(destination, "saved_model.pb")):
            return destination
    elif os.path.lexists(destination):
        raise ValueError(f"{destination} already exists; expected a new directory.")
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
    try:
        with tarfile.open(tar_path) as archive:
            archive.extractall(tmp, members=_safe_members(archive, tmp))
        if not os.path.isfile(os.path.join(tmp, "saved_model.pb")):
            raise ValueError(f"{tar_path} holds no saved_model.pb at its root; expected "
                             "TF-Hub's compressed format (hub_export --tar_gz writes it).")
        try:
            os.replace(tmp, destination)
        except OSError:
            if not os.path.isfile(os.path.join(destination, "saved_model.pb")):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process was faster
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return destination


class LocalTarballResolver:
    """A tensorflow_hub resolver: local *.tar.gz / *.tgz / *.tar path -> unpacked dir."""

    def is_supported(self, handle):
        return _is_local_tarball(handle)

    def __call__(self, handle):
        return unpack(handle)


def register_local_resolver():
    """Lets hub.load / hub.KerasLayer take a local archive path. Idempotent."""
    from tensorflow_hub import registry  # pylint: disable=g-import-not-at-top
    if not any(isinstance(impl, LocalTarballResolver)
               for impl in getattr(registry.resolver, "_impls", [])):
        registry.resolver.add_implementation(LocalTarballResolver())


def pack_tar_gz(module_dir, tar_path=None, overwrite=False):
    """Packs a module directory as a .tar.gz in TF-Hub's compressed format.

    The archive holds the module's files at its root (saved_model.pb, variables/,
    assets/), as tfhub.dev and Kaggle serve them. hub.load / hub.KerasLayer read it
    from an http(s) or gs:// URL (they unpack it into $TFHUB_CACHE_DIR); for a local
    file see `hub_export.tarball`. Written atomically; returns the archive's path.
    """
    module_dir = os.path.abspath(module_dir)
    if not os.path.isfile(os.path.join(module_dir, "saved_model.pb")):
        raise ExportError(f"{module_dir} is not a SavedModel directory (no saved_model.pb).")
    tar_path = os.path.abspath(tar_path or module_dir + ".tar.gz")
    if os.path.lexists(tar_path) and not overwrite:
        raise ExportError(f"{tar_path} already exists; expected a new path "
                          "(or --overwrite to replace it).")
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(tar_path)}.tmp-",
                                    dir=os.path.dirname(tar_path))
    os.close(fd)
    try:
        with tarfile.open(tmp_path, "w:gz") as archive:
            for name in sorted(os.listdir(module_dir)):
                archive.add(os.path.join(module_dir, name), arcname=name)
        os.replace(tmp_path, tar_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return tar_path
