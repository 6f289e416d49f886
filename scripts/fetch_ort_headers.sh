#!/usr/bin/env bash
# Fetch onnxruntime's C/C++ headers (Debian trixie's libonnxruntime-dev, ORT 1.21) into
# third_party/onnxruntime/ (git-ignored). onnxruntime's wheels ship no headers; nothing is
# installed system-wide: a scratch apt configuration downloads the .deb and dpkg -x unpacks it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/third_party/onnxruntime"
if [ -f "$dest/include/onnxruntime_cxx_api.h" ]; then
  echo "onnxruntime headers already in $dest/include"
  exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$scratch/lists/partial" "$scratch/archives/partial" "$scratch/etc"
echo "deb [signed-by=$keyring] $mirror trixie main" > "$scratch/etc/sources.list"
touch "$scratch/etc/status"
apt_opts=(-o "Dir::Etc::SourceList=$scratch/etc/sources.list" -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$scratch/lists" -o "Dir::State::Status=$scratch/etc/status"
  -o "Dir::Cache::Archives=$scratch/archives" -o "Dir::Cache=$scratch" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" -qq update
(cd "$scratch" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev)
dpkg -x "$scratch"/libonnxruntime-dev_*.deb "$scratch/pkg"
mkdir -p "$dest"
rm -rf "$dest/include"
cp -r "$scratch/pkg/usr/include/onnxruntime" "$dest/include"
echo "onnxruntime headers unpacked into $dest/include"
