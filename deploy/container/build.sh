#!/usr/bin/env bash
# Builds the mailferry container image without any registry image: a root file system made
# from scratch (the binary, the shared libraries ldd lists, the CA certificates, passwd/group
# with the service user, the example configuration, the state directory), then
#   - OUT/rootfs.tar and OUT/Containerfile (FROM scratch + ADD rootfs.tar) for podman/docker;
#   - OUT/mailferry-oci.tar: an OCI image layout (one layer, the image config of the
#     Containerfile), written here with tar and sha256sum, for `podman load`, `docker load`
#     or `skopeo copy oci-archive:...`;
# and checks the image: `mailferry --version` and `check-config` on the example, run as the
# image's user, in the unpacked layer under unshare + chroot (or with podman: --engine).
#
# Usage: deploy/container/build.sh [--binary PATH] [--out DIR] [--engine chroot|podman]
#   --binary  the mailferry executable to put in (default: cargo build --release)
#   --out     where to write (default: target/container)
#   --engine  what runs the check: chroot (the default: the unpacked image under unshare +
#             chroot, works wherever root may unshare) or podman (loads the OCI layout, also
#             builds the Containerfile, runs both; needs a podman that can run containers:
#             in a container without CAP_SYS_RESOURCE crun cannot set the rlimits)
# Needs root (the image's files belong to root and to the service user) and ldd, tar,
# sha256sum, unshare, chroot.
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=
out=target/container
engine=chroot
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --engine) engine=$2; shift 2 ;;
        *) echo "build.sh: unknown argument $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    cargo build --release --locked
    binary=target/release/mailferry
fi
case "$engine" in
    podman | chroot) ;;
    *) echo "build.sh: --engine $engine: chroot or podman" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: run as root (the image's files are owned by root and uid $((10001)))" >&2
    exit 1
fi

# The service user, as the Containerfile's USER names it.
uid=10001
version=$("$binary" --version | awk '{print $2}')
# Reproducible: every file dated from the last commit.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)

rm -rf "$out"
rootfs=$out/rootfs
mkdir -p "$rootfs"/{usr/bin,etc/ssl/certs,etc/mailferry,var/lib/mailferry,tmp}

install -m 0755 "$binary" "$rootfs/usr/bin/mailferry"
strip --strip-debug "$rootfs/usr/bin/mailferry"

# The shared libraries and the dynamic loader, each at the path the binary asks for.
# (glibc 2.34+ has the files and dns name services inside libc: no libnss_* to add.)
ldd "$binary" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done

# The system trust store that certificates are verified against (Debian's ca-certificates).
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nmailferry:x:%d:%d:mailferry:/var/lib/mailferry:/usr/sbin/nologin\n' \
    "$uid" "$uid" > "$rootfs/etc/passwd"
printf 'root:x:0:\nmailferry:x:%d:\n' "$uid" > "$rootfs/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
# The example, to be replaced by a mounted configuration (it may hold passwords: 0640).
install -m 0640 -g "$uid" conf/mailferry.example.yaml "$rootfs/etc/mailferry/mailferry.yaml"
chown "root:$uid" "$rootfs/etc/mailferry"
chmod 0750 "$rootfs/etc/mailferry"
chown "$uid:$uid" "$rootfs/var/lib/mailferry"
chmod 0700 "$rootfs/var/lib/mailferry"
chmod 1777 "$rootfs/tmp"

tar -C "$rootfs" --numeric-owner --sort=name --mtime="@$epoch" -cf "$out/rootfs.tar" .
cp deploy/container/Containerfile "$out/Containerfile"

# The OCI image layout: blobs named by their SHA-256, an image config, a manifest, an index.
oci=$out/oci
mkdir -p "$oci/blobs/sha256"
blob() { # FILE -> "DIGEST SIZE", the file moved into blobs/
    local digest size
    digest=$(sha256sum "$1" | awk '{print $1}')
    size=$(stat -c %s "$1")
    mv "$1" "$oci/blobs/sha256/$digest"
    echo "$digest $size"
}
cp "$out/rootfs.tar" "$out/layer.tar"
read -r layer_digest layer_size < <(blob "$out/layer.tar")
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
# The same settings as the Containerfile.
printf '%s' '{"created":"'"$created"'","architecture":"amd64","os":"linux",'\
'"config":{"User":"'"$uid:$uid"'","WorkingDir":"/var/lib/mailferry",'\
'"Env":["PATH=/usr/bin"],"Entrypoint":["/usr/bin/mailferry"],'\
'"Cmd":["run","--config","/etc/mailferry/mailferry.yaml"],'\
'"ExposedPorts":{"9425/tcp":{}},"Volumes":{"/var/lib/mailferry":{}},'\
'"Labels":{"org.opencontainers.image.title":"mailferry","org.opencontainers.image.version":"'"$version"'"}},'\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$layer_digest"'"]},'\
'"history":[{"created":"'"$created"'","created_by":"deploy/container/build.sh"}]}' > "$out/config.json"
read -r config_digest config_size < <(blob "$out/config.json")
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},'\
'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}]}' \
    > "$out/manifest.json"
read -r manifest_digest manifest_size < <(blob "$out/manifest.json")
printf '%s' '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"','\
'"annotations":{"org.opencontainers.image.ref.name":"mailferry:'"$version"'"}}]}' > "$oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$oci/oci-layout"
tar -C "$oci" --numeric-owner --sort=name --mtime="@$epoch" -cf "$out/mailferry-oci.tar" .
echo "build.sh: image mailferry:$version: $out/mailferry-oci.tar (OCI layout)," \
    "$out/rootfs.tar + $out/Containerfile; layer $(du -h "$out/rootfs.tar" | cut -f1)"

# The check: the image as built, run as its own user.
if [ "$engine" = podman ]; then
    # The OCI layout as loaded, and the Containerfile built by podman: the same image.
    podman load -q -i "$out/mailferry-oci.tar"
    podman build -q -f "$out/Containerfile" -t "localhost/mailferry:$version-containerfile" "$out"
    echo "build.sh: check with podman"
    for image in "localhost/mailferry:$version" "localhost/mailferry:$version-containerfile"; do
        podman run --rm "$image" --version
        podman run --rm -e MAILFERRY_CATCHALL_PASSWORD=x "$image" \
            check-config --config /etc/mailferry/mailferry.yaml
    done
    podman rmi -f "localhost/mailferry:$version-containerfile" >/dev/null
else
    # The layer of the OCI layout, unpacked, in a fresh mount, PID and network namespace,
    # with the image's user and entrypoint.
    check=$out/check-root
    mkdir -p "$check"
    tar -C "$check" -xf "$oci/blobs/sha256/$layer_digest"
    echo "build.sh: check with unshare + chroot --userspec=$uid:$uid"
    env -i PATH=/usr/sbin:/usr/bin unshare --mount --pid --net --fork \
        chroot --userspec="$uid:$uid" "$check" /usr/bin/mailferry --version
    env -i PATH=/usr/sbin:/usr/bin MAILFERRY_CATCHALL_PASSWORD=x unshare --mount --pid --net --fork \
        chroot --userspec="$uid:$uid" "$check" /usr/bin/mailferry \
        check-config --config /etc/mailferry/mailferry.yaml
    rm -rf "$check"
fi
rm -rf "$rootfs"
