#!/usr/bin/env bash
# Install Debian's fonts (DejaVu, Noto CJK) and Tesseract for the OCR tests and scripts/bench/ocr.py
# when they are missing and we may (root + apt). Never fails: without them those tests skip, saying why.
need=()
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || [ -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] \
  || need+=(fonts-noto-cjk)
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr tesseract-ocr-eng)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_fonts: installing ${need[*]} for the OCR tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") \
    >/tmp/blipsearch-fonts-install.log 2>&1 || echo "ensure_fonts: install failed; the OCR tests will skip" >&2
else
  echo "ensure_fonts: ${need[*]} missing and cannot be installed here; the OCR tests will skip" >&2
fi
exit 0
