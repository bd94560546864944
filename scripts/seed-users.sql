-- Users $1..=$2 of a seeding, straight into the users table (scripts/seed-users.sh, and the
-- load bench's `--seed sql`): $3 the seeding's tag (in every e-mail), $4 the creation time of
-- user 0 in Unix ms, $5 the password hash. Each row is what a create through the service
-- writes (actors/src/store/creates.rs): a UUIDv7 id whose time is the user's created_at, so
-- ids grow with i as the service's do; the e-mail user<i>.<tag>@bench.example.com; a name of
-- one of 24 first names and 48 surnames, Latin and Cyrillic (1 152 names, ё among them, so
-- that searches find many users by a prefix and few by a rare fragment); every other column
-- its default. Answers each user's id and e-mail.
INSERT INTO users (id, email, name, password_hash, created_at, updated_at)
SELECT (lpad(to_hex(ms), 12, '0') || '7'
        || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid,
       'user' || i || '.' || $3 || '@bench.example.com',
       (ARRAY['Alexander', 'Alexei', 'Anna', 'Boris', 'Daria', 'Dmitry', 'Elena', 'Fyodor',
              'Irina', 'Ivan', 'Kirill', 'Maria', 'Nikita', 'Olga', 'Pavel', 'Sofia',
              'Александр', 'Алёна', 'Борис', 'Галина', 'Ирина', 'Никита', 'Ольга', 'Фёдор'])
           [1 + (i * 7) % 24]
       || ' ' ||
       (ARRAY['Abramov', 'Belova', 'Chernov', 'Davydova', 'Egorov', 'Fedorova', 'Gusev',
              'Ilyina', 'Kozlov', 'Lebedeva', 'Morozov', 'Novikova', 'Orlov', 'Pavlova',
              'Romanov', 'Sokolova', 'Tarasov', 'Volkova', 'Zaitsev', 'Kuznetsova', 'Smith',
              'Johnson', 'Garcia', 'Miller', 'Nakamura', 'Kowalski', 'Schmidt', 'Rossi',
              'Абрамов', 'Белова', 'Воробьёв', 'Григорьева', 'Дмитриев', 'Ершова', 'Жуков',
              'Зайцева', 'Ковалёв', 'Лебедева', 'Медведев', 'Николаева', 'Орлов', 'Петрова',
              'Семёнов', 'Тихонова', 'Уткин', 'Фролова', 'Чернов', 'Щербакова'])
           [1 + ((i / 24) * 13) % 48],
       $5,
       timestamptz 'epoch' + ms * interval '1 millisecond',
       timestamptz 'epoch' + ms * interval '1 millisecond'
  FROM (SELECT i, $4 + i AS ms FROM generate_series($1::bigint, $2::bigint) AS i) AS s
RETURNING id, email
