#!/bin/sh
# Run on the build VM by ci/pipeline.sh: /usr/src becomes a git checkout holding the
# series' base commit (shallow), which `invoke build` puts the series on.
#   setup-src.sh BASE_COMMIT GIT_URL
set -eu
base=$1
url=$2
if [ ! -d /usr/src/.git ]; then
	git init -q /usr/src
	git -C /usr/src remote add origin "$url"
fi
git -C /usr/src cat-file -e "$base^{commit}" 2>/dev/null ||
	git -C /usr/src fetch -q --depth 1 origin "$base"
git -C /usr/src checkout -q --force -B main "$base"
