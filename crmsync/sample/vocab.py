"""Word lists for the sample store: Turkish names, places, categories and products.

Kept as plain tuples so the generator only indexes into them; the lists are long enough
that 2,000 customers look varied and short enough to read. Names use the letters that
trip up careless code (İ, ı, ş, ğ, ü, ö, ç).
"""

from __future__ import annotations

FEMALE_NAMES: tuple[str, ...] = (
    "Ayşe", "Fatma", "Emine", "Hatice", "Zeynep", "Elif", "Meryem", "Şerife", "Zehra",
    "Sultan", "Hanife", "Merve", "Büşra", "Esra", "Özlem", "Gül", "Yasemin", "Ebru",
    "Derya", "Gülşen", "Şeyma", "Tuğba", "İrem", "Işıl", "Nur", "Dilek", "Çiğdem",
    "Gökçe", "Pınar", "Sevgi", "Ümran", "Ece", "Defne", "Eylül", "Ceren", "Burcu",
    "Aslı", "Sıla", "Melike", "Nazlı", "Öykü", "Başak", "Kübra", "Şule", "İpek",
    "Damla", "Gizem", "Hülya", "Leyla", "Ayşegül",
)  # fmt: skip

MALE_NAMES: tuple[str, ...] = (
    "Mehmet", "Mustafa", "Ahmet", "Ali", "Hüseyin", "Hasan", "İbrahim", "İsmail", "Osman",
    "Yusuf", "Murat", "Ömer", "Ramazan", "Halil", "Süleyman", "Abdullah", "Mahmut",
    "Recep", "Emre", "Burak", "Oğuz", "Barış", "Çağrı", "Doğan", "Eren", "Furkan",
    "Gökhan", "Kaan", "Kerem", "Onur", "Serkan", "Şahin", "Tolga", "Uğur", "Volkan",
    "Yiğit", "Alper", "Berk", "Cem", "Deniz", "Efe", "Emir", "Görkem", "İlker",
    "Koray", "Orhan", "Sinan", "Tuncay", "Ümit", "Çetin",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Yıldırım", "Öztürk", "Aydın",
    "Özdemir", "Arslan", "Doğan", "Kılıç", "Aslan", "Çetin", "Kara", "Koç", "Kurt",
    "Özkan", "Şimşek", "Polat", "Korkmaz", "Karataş", "Erdoğan", "Güneş", "Akgül",
    "Türk", "Bulut", "Keskin", "Ünal", "Işık", "Güler", "Tekin", "Aktaş", "Uçar",
    "Çakır", "Başaran", "Acar", "Sarı", "Gündoğdu", "Kahraman", "Bozkurt", "Eren",
    "Gök", "Uysal", "Ateş", "Akın", "Ekinci", "Özer", "Taş", "Avcı", "Tunç", "Dinç",
    "Bayram", "Sönmez", "Köse", "Durmaz", "Karakaya", "Çiftçi", "Ayhan", "İnce",
    "Kocabaş", "Ağca", "Oğuz", "Toprak", "Aksoy", "Yücel", "Ergün", "Altıntaş", "Coşkun",
)  # fmt: skip

# (city, relative weight, districts); weights follow population and online shopping roughly
CITIES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("İstanbul", 30, ("Kadıköy", "Beşiktaş", "Üsküdar", "Şişli", "Bakırköy", "Ataşehir",
                      "Esenyurt", "Pendik", "Maltepe", "Beylikdüzü", "Sarıyer", "Fatih")),
    ("Ankara", 10, ("Çankaya", "Keçiören", "Yenimahalle", "Etimesgut", "Mamak", "Gölbaşı")),
    ("İzmir", 8, ("Karşıyaka", "Bornova", "Konak", "Buca", "Çiğli", "Bayraklı")),
    ("Bursa", 5, ("Nilüfer", "Osmangazi", "Yıldırım", "Mudanya")),
    ("Antalya", 4, ("Muratpaşa", "Konyaaltı", "Kepez", "Alanya")),
    ("Kocaeli", 3, ("İzmit", "Gebze", "Darıca")),
    ("Konya", 3, ("Selçuklu", "Meram", "Karatay")),
    ("Adana", 3, ("Seyhan", "Çukurova", "Yüreğir")),
    ("Gaziantep", 3, ("Şahinbey", "Şehitkamil")),
    ("Mersin", 2, ("Yenişehir", "Mezitli", "Tarsus")),
    ("Kayseri", 2, ("Melikgazi", "Kocasinan", "Talas")),
    ("Eskişehir", 2, ("Tepebaşı", "Odunpazarı")),
    ("Diyarbakır", 2, ("Kayapınar", "Bağlar")),
    ("Samsun", 2, ("Atakum", "İlkadım")),
    ("Tekirdağ", 1.5, ("Çorlu", "Süleymanpaşa")),
    ("Sakarya", 1.5, ("Adapazarı", "Serdivan")),
    ("Muğla", 1.5, ("Bodrum", "Fethiye", "Marmaris", "Menteşe")),
    ("Denizli", 1.2, ("Pamukkale", "Merkezefendi")),
    ("Aydın", 1.2, ("Efeler", "Kuşadası", "Didim")),
    ("Balıkesir", 1.2, ("Altıeylül", "Karesi", "Edremit")),
    ("Hatay", 1.2, ("Antakya", "İskenderun")),
    ("Manisa", 1.2, ("Yunusemre", "Şehzadeler")),
    ("Trabzon", 1, ("Ortahisar", "Akçaabat")),
    ("Şanlıurfa", 1, ("Haliliye", "Eyyübiye")),
    ("Malatya", 1, ("Battalgazi", "Yeşilyurt")),
    ("Erzurum", 1, ("Yakutiye", "Palandöken")),
    ("Kahramanmaraş", 1, ("Onikişubat", "Dulkadiroğlu")),
    ("Van", 0.8, ("İpekyolu", "Tuşba")),
    ("Çanakkale", 0.8, ("Biga", "Gelibolu")),
    ("Edirne", 0.6, ("Keşan", "Uzunköprü")),
)  # fmt: skip

COLOURS: tuple[str, ...] = (
    "Siyah", "Beyaz", "Lacivert", "Kırmızı", "Gri", "Yeşil", "Bej", "Pembe", "Haki",
)  # fmt: skip

# (category, SKU prefix, weight, vary by colour?, ((product, min TRY, max TRY), ...))
CATEGORIES: tuple[tuple[str, str, float, bool, tuple[tuple[str, int, int], ...]], ...] = (
    ("Elektronik", "ELK", 12, False, (
        ("Kablosuz Kulaklık", 400, 3500), ("Akıllı Saat", 1500, 12000),
        ("Bluetooth Hoparlör", 500, 4000), ("Powerbank 20000 mAh", 400, 1200),
        ("Akıllı Telefon", 8000, 65000), ("Tablet", 5000, 30000),
        ("Dizüstü Bilgisayar", 15000, 80000), ("Oyun Konsolu", 15000, 30000),
        ("Şarj Adaptörü", 150, 900), ("27 inç Monitör", 5000, 15000),
        ("Saç Kurutma Makinesi", 600, 4000),
    )),
    ("Giyim", "GYM", 20, True, (
        ("Pamuklu Tişört", 150, 600), ("Kot Pantolon", 500, 1800),
        ("Kapüşonlu Sweatshirt", 400, 1500), ("Triko Kazak", 400, 1500),
        ("Gömlek", 350, 1200), ("Şişme Mont", 1500, 6000), ("Elbise", 500, 2500),
        ("Eşofman Takımı", 600, 2000), ("Pijama Takımı", 300, 1000),
    )),
    ("Kozmetik", "KZM", 13, False, (
        ("Nemlendirici Krem", 150, 900), ("Güneş Kremi SPF50", 200, 800),
        ("Parfüm 100 ml", 800, 5000), ("Ruj", 150, 700), ("Maskara", 150, 600),
        ("Şampuan 500 ml", 80, 300), ("Yüz Temizleme Jeli", 150, 600),
        ("Tırnak Cilası", 60, 250),
    )),
    ("Ev & Yaşam", "EVY", 11, False, (
        ("Nevresim Takımı", 500, 2500), ("Banyo Havlusu", 150, 600),
        ("Çelik Tencere Seti", 1500, 8000), ("Kahve Makinesi", 1500, 12000),
        ("Yemek Takımı 24 Parça", 1000, 5000), ("Dekoratif Yastık", 150, 500),
        ("Robot Süpürge", 5000, 25000), ("Çay Makinesi", 1000, 4000),
        ("Masa Lambası", 300, 1500),
    )),
    ("Kitap", "KTP", 6, False, (
        ("Roman", 80, 350), ("Çocuk Kitabı", 50, 200), ("Kişisel Gelişim Kitabı", 100, 300),
        ("Tarih Kitabı", 120, 450), ("Yemek Kitabı", 150, 500), ("Polisiye Roman", 90, 300),
        ("Şiir Kitabı", 60, 200),
    )),
    ("Spor", "SPR", 5, True, (
        ("Yoga Matı", 200, 900), ("Dambıl Seti", 400, 2500), ("Koşu Bandı", 12000, 45000),
        ("Spor Çantası", 300, 1200), ("Bisiklet Kaskı", 500, 2000),
        ("Termos 750 ml", 250, 1000), ("Pilates Topu", 150, 500), ("Kamp Çadırı", 1500, 8000),
    )),
    ("Oyuncak", "OYC", 3, False, (
        ("Yapı Blokları Seti", 400, 5000), ("Peluş Ayı", 150, 600),
        ("Uzaktan Kumandalı Araba", 400, 2500), ("Bebek Seti", 200, 1200),
        ("Kutu Oyunu", 250, 1200), ("Puzzle 1000 Parça", 150, 500),
        ("Eğitici Oyuncak", 150, 800),
    )),
    ("Süpermarket", "SPM", 15, False, (
        ("Türk Kahvesi 250 g", 80, 250), ("Zeytinyağı 1 L", 250, 600), ("Çay 1 kg", 150, 350),
        ("Deterjan 5 kg", 200, 600), ("Karışık Kuruyemiş 500 g", 200, 500),
        ("Makarna 500 g", 20, 50), ("Bebek Bezi", 300, 800), ("Çiçek Balı 850 g", 300, 900),
        ("Fındık Ezmesi", 100, 250),
    )),
    ("Ayakkabı", "AYK", 8, True, (
        ("Koşu Ayakkabısı", 1200, 5000), ("Deri Bot", 1500, 6000), ("Sneaker", 1000, 4500),
        ("Topuklu Ayakkabı", 700, 3000), ("Terlik", 150, 600), ("Çocuk Ayakkabısı", 400, 1500),
    )),
    ("Aksesuar", "AKS", 7, True, (
        ("Deri Cüzdan", 300, 1500), ("Güneş Gözlüğü", 400, 3000), ("Kol Saati", 800, 8000),
        ("Sırt Çantası", 400, 2000), ("Kemer", 200, 800), ("Şal", 150, 700),
        ("Gümüş Kolye", 400, 2500), ("Telefon Kılıfı", 100, 400),
    )),
)  # fmt: skip

_FOLD = str.maketrans(
    {"ç": "c", "ğ": "g", "ı": "i", "ö": "o", "ş": "s", "ü": "u", "â": "a", "î": "i", "û": "u"}
)


def turkish_lower(value: str) -> str:
    """Lower case by Turkish rules: I becomes ı and İ becomes i (Python alone gets both wrong)."""
    return value.replace("I", "ı").replace("İ", "i").lower()


def turkish_upper(value: str) -> str:
    """Upper case by Turkish rules: i becomes İ and ı becomes I."""
    return value.replace("i", "İ").replace("ı", "I").upper()


def ascii_fold(value: str) -> str:
    """The ASCII spelling people use in e-mail addresses: "Ayşe Yılmaz" -> "ayse yilmaz"."""
    return turkish_lower(value).translate(_FOLD)
