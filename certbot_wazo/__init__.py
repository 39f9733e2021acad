"""Let's Encrypt certificates for Wazo (formerly XiVO) telephony servers."""
